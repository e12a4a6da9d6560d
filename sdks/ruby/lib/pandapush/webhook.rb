# frozen_string_literal: true

require "json"
require "openssl"

module Pandapush
  # Checking that a webhook request came from pandapush. X-Pandapush-Key names the signing key,
  # X-Pandapush-Signature is the hex HMAC-SHA256 of the raw body under that key's secret. The
  # comparison takes the same time whatever the signature, so it cannot be learnt a byte at a time.
  module Webhook
    SIGNATURE_HEADER = "X-Pandapush-Signature"
    KEY_HEADER = "X-Pandapush-Key"

    module_function

    # The signature pandapush sends with +body+.
    def sign(secret, body)
      OpenSSL::HMAC.hexdigest("SHA256", secret, body.to_s)
    end

    # Constant-time equality of two strings, whatever their lengths (both are hashed first).
    def secure_compare(a, b)
      a = a.to_s.b
      b = b.to_s.b
      if OpenSSL.respond_to?(:secure_compare)
        OpenSSL.secure_compare(a, b)
      else
        left = OpenSSL::Digest::SHA256.digest(a).bytes
        right = OpenSSL::Digest::SHA256.digest(b).bytes
        left.zip(right).reduce(0) { |acc, (x, y)| acc | (x ^ y) }.zero? && a == b
      end
    end

    # True if +signature+ signs the raw +body+ under +secret+ (and +signed_by+, the
    # X-Pandapush-Key header, when given, names +key_id+). Verify the bytes as received.
    def verify(key_id, secret, body, signature, signed_by = nil)
      return false if !signed_by.nil? && !secure_compare(signed_by, key_id)
      return false unless signature.is_a?(String) && !signature.empty?

      secure_compare(sign(secret, body), signature.strip.downcase)
    end

    # A header from a Hash of headers in any case, or a Rack env (HTTP_X_PANDAPUSH_...).
    def header(headers, name)
      rack = "HTTP_#{name.upcase.tr("-", "_")}"
      headers.each { |key, value| return value if key.to_s.casecmp?(name) || key.to_s == rack }
      nil
    end

    # The webhook's payload once its signature is checked; InvalidWebhookError otherwise.
    def parse(key_id, secret, body, headers)
      unless verify(key_id, secret, body, header(headers, SIGNATURE_HEADER), header(headers, KEY_HEADER))
        raise InvalidWebhookError, "Webhook signature or key does not match"
      end

      JSON.parse(body.to_s)
    rescue JSON::ParserError
      raise InvalidWebhookError, "Webhook body is not JSON"
    end
  end
end
