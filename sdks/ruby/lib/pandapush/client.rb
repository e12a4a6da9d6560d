# frozen_string_literal: true

require "json"
require "net/http"
require "openssl"
require "securerandom"
require "time"
require "uri"

module Pandapush
  # A client for pandapush's HTTP API. Every call authenticates with the key and its secret
  # (HTTP Basic), blocks until answered, and returns the answer or raises a Pandapush::Error.
  #
  # Retries: a call that got no answer (refused, reset, timed out) or a 502/503/504 is sent
  # again up to +max_retries+ times, after Retry-After when the server gave one, else after an
  # exponential back-off with jitter. Publishes carry an Idempotency-Key (the caller's, or one
  # made up per call when retries are on) that stays the same on every attempt, so a server that
  # already took the first attempt can drop the repeat.
  #
  # A Client is safe to share between threads: each call opens its own connection.
  class Client
    RETRYABLE_STATUSES = [502, 503, 504].freeze
    # The server refuses longer keys (issue 15: "an idempotency key over 200 characters").
    MAX_IDEMPOTENCY_KEY_LENGTH = 200
    DEFAULT_TIMEOUT = 10
    NETWORK_ERRORS = [
      SocketError, SystemCallError, IOError, EOFError, OpenSSL::SSL::SSLError, Net::HTTPBadResponse,
      Net::ProtocolError
    ].freeze
    TIMEOUT_ERRORS = [Net::OpenTimeout, Net::ReadTimeout, Net::WriteTimeout].freeze

    attr_reader :url, :key_id, :app_id, :timeout, :max_retries, :retry_delay, :max_retry_delay

    # +timeout+ bounds connecting and each read and write, in seconds; +max_retries+ how many
    # times a call is sent again after no answer or a 502/503/504 (0: never); +retry_delay+ the
    # first back-off, doubled per attempt up to +max_retry_delay+, which also bounds how long a
    # Retry-After is honoured (longer, and the error is raised at once). +app_id+ is the
    # application for calls that name no channel. +logger+ (a Logger) hears of retries.
    def initialize(url:, key_id:, secret:, app_id: nil, timeout: DEFAULT_TIMEOUT, max_retries: 2,
                   retry_delay: 0.5, max_retry_delay: 10, logger: nil)
      uri = URI.parse(url.to_s)
      unless %w[http https].include?(uri.scheme) && uri.host && !uri.host.empty?
        raise ArgumentError, "url must be http(s)://host[:port][/path], not #{url.inspect}"
      end
      raise ArgumentError, "give the key and secret as arguments, not in the url" if uri.userinfo
      raise ArgumentError, "a Client needs a key id and its secret" if key_id.to_s.empty? || secret.to_s.empty?
      raise ArgumentError, "max_retries must be >= 0 and timeout > 0" if max_retries.negative? || !timeout.positive?

      @url = url.to_s.chomp("/")
      @uri = uri
      @base_path = uri.path.chomp("/")
      @key_id = key_id
      @secret = secret
      @app_id = app_id
      @timeout = timeout
      @max_retries = max_retries
      @retry_delay = retry_delay
      @max_retry_delay = max_retry_delay
      @logger = logger
      @sleeper = ->(seconds) { sleep(seconds) }
    end

    def inspect
      "#<#{self.class.name} url=#{@url.inspect} key_id=#{@key_id.inspect}>"
    end
    alias to_s inspect

    # It holds a secret: never marshalled (into a cache, a job queue...).
    def marshal_dump
      raise TypeError, "a Pandapush::Client holds a secret: it cannot be marshalled"
    end

    # Publish +data+ (anything JSON can encode) to +channel+ (/<appId>/<type>/<path>). Returns
    # nil once the server accepted it; raises a Pandapush::Error otherwise.
    def publish(channel, data, idempotency_key: nil)
      app_of(channel)
      path = "/channel/#{channel.delete_prefix("/").split("/", -1).map { |s| escape(s) }.join("/")}"
      call("POST", path, body: data, idempotency_key: idempotency_key(idempotency_key))
      nil
    end

    # One message to several channels of one application in one request (POST
    # /apps/<appId>/events); the server refuses all of them if it refuses one.
    def publish_many(channels, data, idempotency_key: nil)
      raise ArgumentError, "channels is a non-empty array of channel names" unless channels.is_a?(Array) && !channels.empty?

      app = same_app(channels)
      call("POST", "/apps/#{escape(app)}/events", body: { "channels" => channels, "data" => data },
                                                  idempotency_key: idempotency_key(idempotency_key))
    end

    # Several messages ({channel:, data:} hashes or [channel, data] pairs), in the order given,
    # in one request (POST /apps/<appId>/batch_events).
    def publish_batch(messages, idempotency_key: nil)
      batch = messages.map do |message|
        if message.is_a?(Hash)
          message = message.transform_keys(&:to_s)
          raise ArgumentError, "each batch message has a channel and data" unless message.key?("channel") && message.key?("data")

          { "channel" => message["channel"], "data" => message["data"] }
        else
          channel, data = message
          { "channel" => channel, "data" => data }
        end
      end
      raise ArgumentError, "a batch holds at least one message" if batch.empty?

      app = same_app(batch.map { |m| m["channel"] })
      call("POST", "/apps/#{escape(app)}/batch_events", body: { "batch" => batch },
                                                        idempotency_key: idempotency_key(idempotency_key))
    end

    # A JWT for a browser (client.subscribeTo(channel, token, ...) with /client.js): +pub+ lets
    # it publish on +channel+, +sub+ subscribe, +presence+ ({ id: ..., ... }) names the member on
    # a presence channel, +expires_in+ seconds bound its life, +user+ names the user it is for
    # (terminate_user_connections(user) then ends what it subscribed, on any channel).
    def token(channel, pub: false, sub: false, presence: nil, expires_in: nil, user: nil)
      Token.mint(@key_id, @secret, channel, pub: pub, sub: sub, presence: presence, expires_in: expires_in,
                                            user: user)
    end

    # True if +signature+ (X-Pandapush-Signature) signs the raw +body+ with this client's
    # secret, and +key_id+ (X-Pandapush-Key), when given, is this client's key.
    def verify_webhook(body, signature, key_id: nil)
      Webhook.verify(@key_id, @secret, body, signature, key_id)
    end

    # The verified webhook payload (+headers+: a Hash in any case, or a Rack env);
    # InvalidWebhookError if it is not signed by this key.
    def parse_webhook(body, headers)
      Webhook.parse(@key_id, @secret, body, headers)
    end

    # {"occupied", "subscription_count", "user_count"} of one channel.
    def channel(name)
      call("GET", "/apps/#{escape(app_of(name))}/channel", query: { "name" => name })
    end

    # The occupied channels (those starting with +prefix+): {"channels" => {name => {...}}}.
    def channels(prefix = nil, app_id: nil)
      app = prefix ? app_of(prefix) : app_for(app_id)
      call("GET", "/apps/#{escape(app)}/channels", query: prefix ? { "prefix" => prefix } : nil)
    end

    # The members of a presence channel: {"members" => {id => presence data}}.
    def members(channel)
      call("GET", "/apps/#{escape(app_of(channel))}/members", query: { "channel" => channel })
    end

    # The channel's recent messages, oldest first, after offset +since+ (at most +limit+):
    # {"epoch", "offset", "messages" => [{"offset", "data", ...}]}.
    def history(channel, since: nil, limit: nil)
      query = { "channel" => channel }
      query["since"] = Integer(since) unless since.nil?
      query["limit"] = Integer(limit) unless limit.nil?
      call("GET", "/apps/#{escape(app_of(channel))}/history", query: query)
    end

    # Disconnect every client of the application whose presence id is +user_id+, on every node.
    def terminate_user_connections(user_id, app_id: nil)
      raise ArgumentError, "user_id is required" if user_id.to_s.empty?

      call("POST", "/apps/#{escape(app_for(app_id))}/users/#{escape(user_id.to_s)}/terminate_connections")
    end

    private

    def escape(segment)
      URI.encode_www_form_component(segment).gsub("+", "%20")
    end

    def app_of(channel)
      app = channel.is_a?(String) && channel.start_with?("/") ? channel.split("/", 3)[1] : nil
      raise ArgumentError, "a channel starts with '/<appId>/': #{channel.inspect}" if app.nil? || app.empty?

      app
    end

    def app_for(given)
      app = given || @app_id
      raise ArgumentError, "this call needs an application: pass app_id: here or to the Client" if app.to_s.empty?

      app
    end

    def same_app(channels)
      apps = channels.map { |c| app_of(c) }.uniq
      raise ArgumentError, "all channels must belong to one application, not #{apps.sort}" unless apps.size == 1

      apps.first
    end

    def idempotency_key(given)
      unless given.nil?
        unless given.is_a?(String) && !given.empty? && given.length <= MAX_IDEMPOTENCY_KEY_LENGTH &&
               given.match?(/\A[\x20-\x7e]+\z/)
          raise ArgumentError, "an idempotency key is 1 to #{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters"
        end

        return given
      end
      # Only a call that may be sent twice needs one; the same key goes with every attempt.
      @max_retries.positive? ? SecureRandom.hex(16) : nil
    end

    def call(method, path, query: nil, body: nil, idempotency_key: nil)
      target = @base_path + path
      target += "?#{URI.encode_www_form(query)}" if query && !query.empty?
      payload = method == "POST" ? JSON.generate(body.nil? ? {} : body) : nil
      attempt = 0
      loop do
        begin
          status, headers, answer = exchange(method, target, payload, idempotency_key)
        rescue NetworkError => e
          error = e.for_request(method, path)
          delay = backoff(attempt)
        else
          return decode(headers, answer) if (200..299).cover?(status)

          error = error_from(status, headers, answer, method, path)
          raise error unless RETRYABLE_STATUSES.include?(status)

          delay = error.retry_after || backoff(attempt)
        end
        raise error if attempt >= @max_retries || delay > @max_retry_delay

        attempt += 1
        @logger&.info("pandapush: retrying #{method} #{path} in #{format("%.2f", delay)}s " \
                      "(retry #{attempt} of #{@max_retries}) after: #{error.message}")
        @sleeper.call(delay)
      end
    end

    def backoff(attempt)
      # Full jitter over an exponential ceiling: clients refused together do not come back together.
      ceiling = [@max_retry_delay, @retry_delay * (2**attempt)].min
      (ceiling / 2.0) + (rand * ceiling / 2.0)
    end

    def exchange(method, target, payload, idempotency_key)
      request = method == "POST" ? Net::HTTP::Post.new(target) : Net::HTTP::Get.new(target)
      request.basic_auth(@key_id, @secret)
      request["Accept"] = "application/json"
      request["User-Agent"] = "pandapush-ruby/#{VERSION}"
      request["Idempotency-Key"] = idempotency_key if idempotency_key
      if payload
        request["Content-Type"] = "application/json; charset=utf-8"
        request.body = payload
      end
      http = Net::HTTP.new(@uri.host, @uri.port)
      http.use_ssl = @uri.scheme == "https"
      http.open_timeout = http.read_timeout = http.write_timeout = @timeout
      # Retrying is ours to do, with the idempotency key: Net::HTTP's own retry would repeat a GET unseen.
      http.max_retries = 0
      response = http.start { |connection| connection.request(request) }
      [response.code.to_i, response, response.body.to_s]
    rescue *TIMEOUT_ERRORS
      raise TimeoutError, "No answer within #{@timeout}s"
    rescue *NETWORK_ERRORS => e
      raise NetworkError, "Connection failed: #{e.class.name}"
    end

    def decode(headers, body)
      return nil if body.strip.empty?
      return body unless headers["Content-Type"].to_s.include?("json")

      JSON.parse(body)
    end

    def error_from(status, headers, body, method, path)
      message = Net::HTTPResponse::CODE_TO_OBJ[status.to_s]&.name&.sub(/\ANet::HTTP/, "") || "Error"
      code = nil
      params = []
      begin
        decoded = body.strip.empty? ? nil : JSON.parse(body)
      rescue JSON::ParserError
        decoded = nil
        message = body.strip[0, 300] unless body.strip.empty?
      end
      if decoded.is_a?(Hash)
        message = decoded["message"] if decoded["message"].is_a?(String)
        code = decoded["code"] if decoded["code"].is_a?(Integer)
        params = decoded["params"] if decoded["params"].is_a?(Array)
      end
      Pandapush.error_for_status(status).new(
        message, status: status, code: code, params: params, http_method: method, path: path,
                 retry_after: retry_after(headers["Retry-After"])
      )
    end

    def retry_after(value)
      return nil if value.nil? || value.strip.empty?

      Float(value.strip).clamp(0, Float::INFINITY)
    rescue ArgumentError
      begin
        [Time.httpdate(value.strip) - Time.now, 0].max
      rescue ArgumentError
        nil
      end
    end
  end
end
