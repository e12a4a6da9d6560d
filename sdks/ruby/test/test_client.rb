# frozen_string_literal: true

require_relative "test_helper"
require "logger"
require "stringio"

class ClientTestCase < Minitest::Test
  def setup
    @server = FakeServer.new
    @sleeps = []
    @client = client
  end

  def teardown
    @server.close
  end

  def client(url = @server.url, **options)
    made = Pandapush::Client.new(url: url, key_id: KEY, secret: SECRET, **options)
    sleeps = @sleeps
    made.instance_variable_set(:@sleeper, ->(seconds) { sleeps << seconds })
    made
  end

  def assert_no_secret(*texts)
    texts.each do |text|
      refute_includes text, SECRET
      refute_includes text, ["#{KEY}:#{SECRET}"].pack("m0")
    end
  end

  # The block raises +kind+, and nothing the error prints holds the secret.
  def assert_raises_safely(kind, &block)
    error = assert_raises(kind, &block)
    assert_no_secret(error.message, error.inspect, error.full_message)
    error
  end
end

class RequestShapeTest < ClientTestCase
  def test_publish
    assert_nil @client.publish(ROOM, { text: "hé", n: [1, 2] })
    request, = @server.recorded
    assert_equal ["POST", "/channel/#{APP}/public/room"], [request.method, request.path]
    assert_equal({ "text" => "hé", "n" => [1, 2] }, request.json)
    assert_equal "application/json; charset=utf-8", request.headers["content-type"]
    assert_equal "Basic #{["#{KEY}:#{SECRET}"].pack("m0")}", request.headers["authorization"]
    assert_match(/\A[0-9a-f]{32}\z/, request.headers["idempotency-key"])
    assert request.headers["user-agent"].start_with?("pandapush-ruby/")
  end

  def test_idempotency_key_given_or_none
    @client.publish(ROOM, 1, idempotency_key: "order-42")
    client(max_retries: 0).publish(ROOM, 2)
    first, second = @server.recorded
    assert_equal "order-42", first.headers["idempotency-key"]
    refute second.headers.key?("idempotency-key")
    ["", "x" * 201, "café", "a\nb", 42].each do |bad|
      assert_raises(ArgumentError) { @client.publish(ROOM, 1, idempotency_key: bad) }
    end
    assert_equal 2, @server.recorded.size
  end

  def test_base_path
    client("#{@server.url}/pandapush/").publish("/#{APP}/private/users/42", 1)
    assert_equal "/pandapush/channel/#{APP}/private/users/42", @server.recorded.first.path
  end

  def test_publish_many
    @server.script({ body: { "ok" => true } })
    channels = [ROOM, "/#{APP}/private/a"]
    assert_equal({ "ok" => true }, @client.publish_many(channels, { x: 1 }))
    request, = @server.recorded
    assert_equal ["POST", "/apps/#{APP}/events"], [request.method, request.path]
    assert_equal({ "channels" => channels, "data" => { "x" => 1 } }, request.json)
    assert request.headers.key?("idempotency-key")
    assert_raises(ArgumentError) { @client.publish_many([ROOM, "/otherApp/public/room"], 1) }
    assert_raises(ArgumentError) { @client.publish_many(ROOM, 1) }
    assert_equal 1, @server.recorded.size
  end

  def test_publish_batch
    @client.publish_batch([{ channel: ROOM, data: 1 }, ["/#{APP}/public/b", { y: 2 }]])
    request, = @server.recorded
    assert_equal "/apps/#{APP}/batch_events", request.path
    assert_equal({ "batch" => [{ "channel" => ROOM, "data" => 1 },
                               { "channel" => "/#{APP}/public/b", "data" => { "y" => 2 } }] }, request.json)
    [[], [{ channel: ROOM }], [[ROOM, 1], ["/other/public/x", 2]]].each do |bad|
      assert_raises(ArgumentError) { @client.publish_batch(bad) }
    end
  end

  def test_queries
    occupied = { "occupied" => true, "subscription_count" => 2, "user_count" => 1 }
    @server.script({ body: occupied }, { body: { "channels" => {} } }, { body: { "channels" => {} } },
                   { body: { "members" => { "u1" => { "id" => "u1" } } } },
                   { body: { "epoch" => "e", "offset" => 3, "messages" => [] } })
    presence = "/#{APP}/presence/room"
    assert_equal occupied, @client.channel(presence)
    @client.channels("/#{APP}/presence/")
    @client.channels(app_id: APP)
    assert_equal({ "members" => { "u1" => { "id" => "u1" } } }, @client.members(presence))
    assert_equal 3, @client.history(ROOM, since: 2, limit: 10)["offset"]
    got = @server.recorded.map { |r| [r.method, r.path, r.query] }
    assert_equal [
      ["GET", "/apps/#{APP}/channel", { "name" => [presence] }],
      ["GET", "/apps/#{APP}/channels", { "prefix" => ["/#{APP}/presence/"] }],
      ["GET", "/apps/#{APP}/channels", {}],
      ["GET", "/apps/#{APP}/members", { "channel" => [presence] }],
      ["GET", "/apps/#{APP}/history", { "channel" => [ROOM], "since" => ["2"], "limit" => ["10"] }]
    ], got
    assert(@server.recorded.none? { |r| r.headers.key?("idempotency-key") })
    assert_raises(ArgumentError) { @client.channels }
  end

  def test_terminate_user_connections
    client(app_id: APP).terminate_user_connections("user/1")
    @client.terminate_user_connections("u2", app_id: "other")
    first, second = @server.recorded
    assert_equal ["POST", "/apps/#{APP}/users/user%2F1/terminate_connections"], [first.method, first.path]
    assert_equal "/apps/other/users/u2/terminate_connections", second.path
    assert_raises(ArgumentError) { @client.terminate_user_connections("u3") }
  end

  def test_bad_arguments
    ["room", "", "//public/x", nil].each do |channel|
      assert_raises(ArgumentError) { @client.publish(channel, 1) }
    end
    ["ftp://host", "localhost:3000", "http://key:secret@host"].each do |url|
      assert_raises(ArgumentError) { Pandapush::Client.new(url: url, key_id: KEY, secret: SECRET) }
    end
    assert_raises(ArgumentError) { Pandapush::Client.new(url: @server.url, key_id: KEY, secret: "") }
    assert_empty @server.recorded
  end
end

class ErrorTest < ClientTestCase
  def test_forbidden
    @server.script(refusal(403, "Invalid secret"))
    error = assert_raises_safely(Pandapush::ForbiddenError) { @client.publish(ROOM, 1) }
    assert_kind_of Pandapush::AuthError, error
    assert_equal [403, 403, "Invalid secret"], [error.status, error.code, error.server_message]
    assert_equal ["POST", "/channel/#{APP}/public/room"], [error.http_method, error.path]
    assert_includes error.message, "Invalid secret"
    assert_equal 1, @server.recorded.size
  end

  def test_each_status
    [
      [refusal(401, "No authentication provided"), Pandapush::AuthenticationError],
      [refusal(404, "Unknown channel type"), Pandapush::NotFoundError],
      [refusal(400, "Body is not valid JSON"), Pandapush::BadRequestError],
      [refusal(413, "Body larger than 1048576 bytes"), Pandapush::BadRequestError],
      [{ status: 500, body: "Internal trouble" }, Pandapush::ServerError]
    ].each do |answer, kind|
      before = @server.recorded.size
      @server.script(answer)
      error = assert_raises_safely(kind) { @client.publish(ROOM, 1) }
      assert_equal answer[:status], error.status
      assert_equal before + 1, @server.recorded.size, kind
      assert_equal "Internal trouble", error.server_message if kind == Pandapush::ServerError
    end
    assert_empty @sleeps
  end

  def test_rate_limited
    @server.script(refusal(429, "Publish rate limit exceeded", "Retry-After" => "7"))
    error = assert_raises_safely(Pandapush::RateLimitedError) { @client.publish(ROOM, 1) }
    assert_equal 7.0, error.retry_after
    assert_equal [1, []], [@server.recorded.size, @sleeps]
  end
end

class RetryTest < ClientTestCase
  def test_unavailable_then_ok
    @server.script(refusal(503, "Storage unavailable", "Retry-After" => "2"), { status: 502, body: "Bad gateway" }, {})
    @client.publish(ROOM, { n: 1 })
    assert_equal 3, @server.recorded.size
    assert_equal 1, @server.recorded.map { |r| r.headers["idempotency-key"] }.uniq.size
    assert_equal 2.0, @sleeps[0]
    assert_includes 0.5..1.0, @sleeps[1]
  end

  def test_retries_are_bounded
    @server.script(*Array.new(5) { refusal(503, "Failed to publish") })
    error = assert_raises_safely(Pandapush::UnavailableError) { @client.publish(ROOM, 1) }
    assert_equal "Failed to publish", error.server_message
    assert_equal [3, 2], [@server.recorded.size, @sleeps.size]
  end

  def test_retry_after_too_long
    @server.script(refusal(503, "Draining", "Retry-After" => "60"))
    error = assert_raises_safely(Pandapush::UnavailableError) { @client.publish(ROOM, 1) }
    assert_equal [60.0, 1, []], [error.retry_after, @server.recorded.size, @sleeps]
  end

  def test_connection_refused
    probe = TCPServer.new("127.0.0.1", 0)
    port = probe.addr[1]
    probe.close
    error = assert_raises_safely(Pandapush::NetworkError) do
      client("http://127.0.0.1:#{port}", max_retries: 3).publish(ROOM, 1)
    end
    assert_nil error.status
    assert_includes error.message, "ECONNREFUSED"
    assert_equal 3, @sleeps.size
  end

  def test_timeout_then_ok
    @server.script({ delay: 1.0 }, {})
    quick = client(timeout: 0.3, max_retries: 1)
    quick.publish(ROOM, 1)
    assert_equal 2, @server.recorded.size
    assert_equal 1, @server.recorded.map { |r| r.headers["idempotency-key"] }.uniq.size
    @server.script({ delay: 1.0 }, { delay: 1.0 })
    error = assert_raises_safely(Pandapush::TimeoutError) { quick.publish(ROOM, 1) }
    assert_kind_of Pandapush::NetworkError, error
    assert_includes error.message, "0.3s"
  end

  def test_dropped_connection
    @server.script({ drop: true }, {})
    @client.publish(ROOM, 1)
    assert_equal [2, 1], [@server.recorded.size, @sleeps.size]
    @server.script(*Array.new(3) { { drop: true } })
    assert_raises_safely(Pandapush::NetworkError) { @client.publish(ROOM, 1) }
    assert_equal 5, @server.recorded.size
  end
end

class SecretTest < ClientTestCase
  def test_inspect_and_marshal
    assert_no_secret(@client.inspect, @client.to_s)
    assert_equal "#<Pandapush::Client url=#{@server.url.inspect} key_id=#{KEY.inspect}>", @client.inspect
    assert_raises(TypeError) { Marshal.dump(@client) }
  end

  def test_logs
    @server.script(refusal(503, "Failed to publish"), refusal(403, "Invalid secret"))
    output = StringIO.new
    logged = client(logger: Logger.new(output, level: Logger::DEBUG))
    assert_raises_safely(Pandapush::ForbiddenError) { logged.publish(ROOM, 1) }
    assert_includes output.string, "retrying POST /channel/#{APP}/public/room"
    assert_includes output.string, "Failed to publish"
    assert_no_secret(output.string)
  end
end
