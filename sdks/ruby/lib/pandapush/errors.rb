# frozen_string_literal: true

module Pandapush
  # Every failure of a call. A refusal by the server carries its HTTP +status+ and the server's
  # error body ({"code", "params", "message"}, the shape of a Faye error): +code+, +params+ and
  # +server_message+. A failure on the way (refused, reset, timed out) has +status+ nil.
  # #message names the method and path of the request, never its headers: the key's secret
  # travels in Authorization and must not reach a log through an exception.
  class Error < StandardError
    attr_reader :status, :code, :params, :server_message, :http_method, :path, :retry_after

    def initialize(server_message, status: nil, code: nil, params: nil, http_method: nil, path: nil, retry_after: nil)
      @server_message = server_message
      @status = status
      @code = code || status
      @params = params || []
      @http_method = http_method
      @path = path
      @retry_after = retry_after
      super(describe)
    end

    # The same error for another request (the client adds where it happened).
    def for_request(http_method, path)
      self.class.new(@server_message, status: @status, code: @code, params: @params,
                                      http_method: http_method, path: path, retry_after: @retry_after)
    end

    private

    def describe
      where = @http_method && @path ? " on #{@http_method} #{@path}" : ""
      @status ? "HTTP #{@status}#{where}: #{@server_message}" : "#{@server_message}#{where}"
    end
  end

  # The credentials were refused (401 or 403).
  class AuthError < Error; end
  # 401: no credentials the server could read.
  class AuthenticationError < AuthError; end
  # 403: wrong key, secret or token, or one that does not allow this ("Invalid secret"...).
  class ForbiddenError < AuthError; end
  # 404: no such application, channel type or endpoint.
  class NotFoundError < Error; end
  # 400, 413 and other 4xx: the request itself is wrong; sending it again will not help.
  class BadRequestError < Error; end
  # 429: past the key's publishes per second; #retry_after says when to try again.
  class RateLimitedError < Error; end
  # A 5xx answer.
  class ServerError < Error; end
  # 502, 503, 504: the server could not do it now; retried.
  class UnavailableError < ServerError; end
  # No answer came: the connection could not be made, or broke. Retried.
  class NetworkError < Error; end
  # No answer within the client's timeout. Retried, with the same idempotency key.
  class TimeoutError < NetworkError; end
  # A webhook request whose signature, key or body is not what pandapush sends.
  class InvalidWebhookError < Error; end

  # The exception class for an HTTP error status.
  def self.error_for_status(status)
    case status
    when 401 then AuthenticationError
    when 403 then ForbiddenError
    when 404 then NotFoundError
    when 429 then RateLimitedError
    when 502, 503, 504 then UnavailableError
    when 500..599 then ServerError
    when 400..499 then BadRequestError
    else Error
    end
  end
end
