# frozen_string_literal: true

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "pandapush"
require "minitest/autorun"
require "socket"
require "json"
require "uri"

APP = "exampleApp0000000001"
KEY = "PSIDexampleKey000001"
SECRET = "example-secret-0123456789"
ROOM = "/#{APP}/public/room"

# A throwaway HTTP server on 127.0.0.1 that records requests and plays scripted answers
# (status, body, headers, delay before answering, or drop: close without answering).
class FakeServer
  Request = Struct.new(:method, :path, :query, :headers, :body, keyword_init: true) do
    def json
      JSON.parse(body)
    end
  end

  def initialize
    @server = TCPServer.new("127.0.0.1", 0)
    @recorded = []
    @script = []
    @lock = Mutex.new
    @thread = Thread.new { serve }
  end

  def url
    "http://127.0.0.1:#{@server.addr[1]}"
  end

  def script(*answers)
    @lock.synchronize { @script.concat(answers) }
  end

  def recorded
    @lock.synchronize { @recorded.dup }
  end

  def close
    @thread.kill
    @server.close
  end

  private

  def serve
    loop do
      socket = @server.accept
      Thread.new(socket) { |s| handle(s) }
    end
  rescue IOError
    nil
  end

  def handle(socket)
    line = socket.gets or return
    method, target, = line.split(" ")
    headers = {}
    while (header = socket.gets) && header != "\r\n"
      name, value = header.split(":", 2)
      headers[name.downcase] = value.strip
    end
    body = socket.read(headers["content-length"].to_i)
    uri = URI.parse(target)
    query = URI.decode_www_form(uri.query || "").each_with_object({}) { |(k, v), h| (h[k] ||= []) << v }
    answer = @lock.synchronize do
      @recorded << Request.new(method: method, path: uri.path, query: query, headers: headers, body: body)
      @script.shift || {}
    end
    sleep(answer[:delay]) if answer[:delay]
    return if answer[:drop]

    status = answer.fetch(:status, 200)
    payload = answer.fetch(:body, "OK")
    type = "text/plain; charset=utf-8"
    if payload.is_a?(Hash)
      payload = JSON.generate(payload)
      type = "application/json; charset=utf-8"
    end
    extra = (answer[:headers] || {}).map { |k, v| "#{k}: #{v}\r\n" }.join
    socket.write("HTTP/1.1 #{status} X\r\nContent-Type: #{type}\r\nContent-Length: #{payload.bytesize}\r\n" \
                 "Connection: close\r\n#{extra}\r\n#{payload}")
  rescue IOError, SystemCallError
    nil
  ensure
    socket.close rescue nil # rubocop:disable Style/RescueModifier
  end
end

def refusal(status, message, headers = {})
  { status: status, body: { "code" => status, "params" => [], "message" => message }, headers: headers }
end
