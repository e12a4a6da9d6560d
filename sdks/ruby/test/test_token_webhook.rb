# frozen_string_literal: true

require_relative "test_helper"

# Made by PyJWT (jwt.encode(claims, SECRET, algorithm="HS256")); the Python and Node libraries
# check the same vector.
PYJWT_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJrZXlJZCI6IlBTSURleGFtcGxlS2V5MDAwMDAxIiwiY2hhbm5lbCI6" \
              "Ii9leGFtcGxlQXBwMDAwMDAwMDAwMS9wcmVzZW5jZS9yb29tIiwicHViIjp0cnVlLCJzdWIiOnRydWUsInByZXNlbmNlIjp7Im" \
              "lkIjoidTEiLCJuYW1lIjoiQW5uIn0sImV4cCI6MTkwMDAwMDAwMH0.JkLutPpig7XsFGPSUKAIx18r5s2Z0AaVWnfFg1wlrUs"
WEBHOOK_BODY = '{"time_ms":1700000000000,"events":[{"id":"e1","name":"channel_occupied",' \
               '"channel":"/exampleApp0000000001/public/room"}]}'
WEBHOOK_SIGNATURE = "af696d007152bbbe69d019ab777fc84a7d845a3873e4ecc9678d68efeafbcc6b"

# [header, claims] of a JWT whose HS256 signature under SECRET holds.
def decode(token)
  signing, _, signature = token.rpartition(".")
  expected = OpenSSL::HMAC.digest("SHA256", SECRET, signing)
  raise "bad signature" unless signature.tr("-_", "+/").unpack1("m") == expected

  signing.split(".").map { |part| JSON.parse(part.tr("-_", "+/").unpack1("m")) }
end

class TokenTest < Minitest::Test
  def setup
    @client = Pandapush::Client.new(url: "http://127.0.0.1:1", key_id: KEY, secret: SECRET)
  end

  def test_same_as_pyjwt
    token = Pandapush::Token.mint(KEY, SECRET, "/#{APP}/presence/room", pub: true, sub: true,
                                                                       presence: { id: "u1", name: "Ann" },
                                                                       expires_in: 100, now: 1_899_999_900)
    assert_equal PYJWT_TOKEN, token
  end

  def test_claims
    before = Time.now.to_i
    token = @client.token("/#{APP}/private/users/42", sub: true, expires_in: 60)
    refute_includes token, "="
    header, claims = decode(token)
    assert_equal({ "alg" => "HS256", "typ" => "JWT" }, header)
    exp = claims.delete("exp")
    assert_equal({ "keyId" => KEY, "channel" => "/#{APP}/private/users/42", "pub" => false, "sub" => true }, claims)
    assert_includes (before + 60)..(Time.now.to_i + 60), exp
    refute decode(@client.token("/#{APP}/public/x", pub: true))[1].key?("exp")
    _, claims = decode(@client.token("/#{APP}/presence/r", presence: { id: "z", name: "Zoë" }, expires_in: 3600))
    assert_equal({ "id" => "z", "name" => "Zoë" }, claims["presence"])
    refute decode(@client.token("/#{APP}/public/x", sub: true))[1].key?("user")
    assert_equal "u-7", decode(@client.token("/#{APP}/private/inbox", sub: true, user: "u-7"))[1]["user"]
    assert_equal "42", decode(@client.token("/#{APP}/private/inbox", sub: true, user: 42))[1]["user"]
  end

  def test_bad_arguments
    assert_raises(ArgumentError) { @client.token("room") }
    [{}, { id: "" }, ["u1"]].each do |presence|
      assert_raises(ArgumentError) { @client.token("/#{APP}/presence/r", presence: presence) }
    end
    assert_raises(ArgumentError) { @client.token("/#{APP}/public/x", expires_in: 0) }
    assert_raises(TypeError) { @client.token("/#{APP}/public/x", expires_in: "60") }
    ["", 1.5, { id: "u1" }].each do |user|
      assert_raises(ArgumentError) { @client.token("/#{APP}/private/x", user: user) }
    end
  end
end

class WebhookTest < Minitest::Test
  def setup
    @client = Pandapush::Client.new(url: "http://127.0.0.1:1", key_id: KEY, secret: SECRET)
  end

  def test_vector
    assert_equal WEBHOOK_SIGNATURE, Pandapush::Webhook.sign(SECRET, WEBHOOK_BODY)
    assert @client.verify_webhook(WEBHOOK_BODY, WEBHOOK_SIGNATURE)
    assert @client.verify_webhook(WEBHOOK_BODY, WEBHOOK_SIGNATURE.upcase, key_id: KEY)
  end

  def test_refused
    [
      ["#{WEBHOOK_BODY} ", WEBHOOK_SIGNATURE, nil],
      [WEBHOOK_BODY, "#{WEBHOOK_SIGNATURE[0..-2]}0", nil],
      [WEBHOOK_BODY, WEBHOOK_SIGNATURE[0, 10], nil],
      [WEBHOOK_BODY, "", nil],
      [WEBHOOK_BODY, nil, nil],
      [WEBHOOK_BODY, "é" * 64, nil],
      [WEBHOOK_BODY, WEBHOOK_SIGNATURE, "PSIDanotherKey"]
    ].each do |body, signature, key_id|
      refute @client.verify_webhook(body, signature, key_id: key_id), [body, signature, key_id].inspect
    end
    other = Pandapush::Client.new(url: "http://127.0.0.1:1", key_id: KEY, secret: "#{SECRET}x")
    refute other.verify_webhook(WEBHOOK_BODY, WEBHOOK_SIGNATURE)
  end

  def test_parse
    [
      { "X-Pandapush-Signature" => WEBHOOK_SIGNATURE, "X-Pandapush-Key" => KEY },
      { "x-pandapush-signature" => WEBHOOK_SIGNATURE },
      { "HTTP_X_PANDAPUSH_SIGNATURE" => WEBHOOK_SIGNATURE, "HTTP_X_PANDAPUSH_KEY" => KEY }
    ].each do |headers|
      assert_equal "channel_occupied", @client.parse_webhook(WEBHOOK_BODY, headers)["events"][0]["name"]
    end
    assert_raises(Pandapush::InvalidWebhookError) do
      @client.parse_webhook(WEBHOOK_BODY, { "X-Pandapush-Signature" => "00" * 32 })
    end
    assert_raises(Pandapush::InvalidWebhookError) do
      @client.parse_webhook("not json", { "X-Pandapush-Signature" => Pandapush::Webhook.sign(SECRET, "not json") })
    end
  end
end
