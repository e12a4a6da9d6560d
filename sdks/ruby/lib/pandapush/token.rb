# frozen_string_literal: true

require "json"
require "openssl"

module Pandapush
  # Pandapush tokens: HS256 JWTs signed with a key's secret, scoped to one channel. A JWT is
  # three base64url parts and one HMAC-SHA256, so the gem needs no JWT library.
  module Token
    HEADER = { "alg" => "HS256", "typ" => "JWT" }.freeze

    module_function

    def base64url(raw)
      [raw].pack("m0").tr("+/", "-_").delete("=")
    end

    # +claims+ as a JWT signed with HMAC-SHA256 under +secret+.
    def sign_hs256(claims, secret)
      signing = "#{base64url(JSON.generate(HEADER))}.#{base64url(JSON.generate(claims))}"
      "#{signing}.#{base64url(OpenSSL::HMAC.digest("SHA256", secret, signing))}"
    end

    # A token for +channel+ (it may end in /* or /**) with the claims pandapush reads: keyId,
    # channel, pub, sub, presence (a hash with at least an "id", for presence channels) and
    # exp (+expires_in+ seconds from +now+; without it the token never expires), and user (the
    # user the subscriber is: the server's terminate_connections for that user ends it).
    def mint(key_id, secret, channel, pub: false, sub: false, presence: nil, expires_in: nil, user: nil, now: nil)
      raise ArgumentError, "a token needs a key id and its secret" if key_id.to_s.empty? || secret.to_s.empty?
      raise ArgumentError, "a channel starts with '/': #{channel.inspect}" unless channel.is_a?(String) && channel.start_with?("/")

      claims = { "keyId" => key_id, "channel" => channel, "pub" => pub ? true : false, "sub" => sub ? true : false }
      unless presence.nil?
        id = presence.is_a?(Hash) ? (presence["id"] || presence[:id]) : nil
        raise ArgumentError, "presence must be a hash with at least an 'id'" if id.nil? || id.to_s.empty?

        claims["presence"] = presence.transform_keys(&:to_s)
      end
      unless user.nil?
        valid = (user.is_a?(String) && !user.empty?) || user.is_a?(Integer)
        raise ArgumentError, "user must be a non-empty string or an integer" unless valid

        claims["user"] = user.to_s
      end
      unless expires_in.nil?
        raise TypeError, "expires_in must be a number of seconds" unless expires_in.is_a?(Numeric)
        raise ArgumentError, "expires_in must be positive, not #{expires_in}" unless expires_in.positive?

        claims["exp"] = ((now || Time.now.to_f) + expires_in).to_i
      end
      sign_hs256(claims, secret)
    end
  end
end
