# frozen_string_literal: true

require_relative "pandapush/version"
require_relative "pandapush/errors"
require_relative "pandapush/token"
require_relative "pandapush/webhook"
require_relative "pandapush/client"

# Publish to pandapush, mint tokens for browsers and verify webhooks, with nothing but Ruby's
# standard library:
#
#   pandapush = Pandapush::Client.new(url: "https://push.example.com", key_id: "PSID...", secret: "...")
#   pandapush.publish("/<appId>/public/messages", { text: "hello" })
module Pandapush
end
