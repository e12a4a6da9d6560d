#!/usr/bin/env ruby
# frozen_string_literal: true

# Send a user a notification from Ruby (the pandapush gem, sdks/ruby):
#
#   ruby examples/notifications/notify.rb 42 "Your export is ready"
#
# It lands on /<app>/private/users/<user>/notifications; watch it with
# node examples/faye-client/subscribe.js /exampleApp0000000001/private/users/42/notifications

$LOAD_PATH.unshift(File.expand_path("../../sdks/ruby/lib", __dir__)) # not needed once the gem is installed
require "pandapush"
require "time"

abort "usage: notify.rb <user id> <text>" unless ARGV.size == 2
user, text = ARGV

pandapush = Pandapush::Client.new(
  url: ENV.fetch("PANDAPUSH_URL", "http://localhost:3000"),
  key_id: ENV.fetch("PANDAPUSH_KEY_ID", "PSIDexampleKey000001"),
  secret: ENV.fetch("PANDAPUSH_KEY_SECRET", "example-secret-0123456789")
)
channel = "/#{ENV.fetch("PANDAPUSH_APP_ID", "exampleApp0000000001")}/private/users/#{user}/notifications"

begin
  pandapush.publish(channel, { text: text, from: "ruby", at: Time.now.utc.iso8601 })
  puts "sent to #{channel}"
rescue Pandapush::Error => e # typed: ForbiddenError, UnavailableError, NetworkError...
  warn "not sent: #{e.message}"
  exit 1
end
