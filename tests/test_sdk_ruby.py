"""
The ``pandapush`` gem (``sdks/ruby``) against a real pandapush: its minitest suite (Ruby from
Debian's ``ruby`` package, warnings on: none may come from the gem) and the end-to-end checks of
:class:`tests.support.sdks.SDKEndToEnd`, each operation a ``ruby`` process using the gem.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.support.requirements import requireExecutable
from tests.support.sdks import SDKS, SECRET, ProcessResult, SDKEndToEnd, runProcess

GEM = SDKS / "ruby"

# One operation with the gem; the outcome as one JSON line.
DRIVER = r"""
require "json"
require "pandapush"
op = JSON.parse(ENV.fetch("PANDAPUSH_OP"))
client = Pandapush::Client.new(url: op.fetch("url", ENV.fetch("PANDAPUSH_URL")),
                               key_id: ENV.fetch("PANDAPUSH_KEY_ID"),
                               secret: ENV.fetch("PANDAPUSH_SECRET"), app_id: ENV.fetch("PANDAPUSH_APP_ID"),
                               max_retries: op.fetch("retries", 0))
begin
  result = case op["op"]
           when "publish"
             op.fetch("times", 1).times do
               client.publish(op["channel"], op["data"], idempotency_key: op["idempotencyKey"])
             end
             nil
           when "token"
             client.token(op["channel"], pub: op["pub"] || false, sub: op["sub"] || false,
                                         presence: op["presence"], expires_in: op["expiresIn"],
                                         user: op["user"])
           when "publishMany" then client.publish_many(op["channels"], op["data"])
           when "publishBatch" then client.publish_batch(op["messages"])
           when "channel" then client.channel(op["name"])
           when "channels" then client.channels(op["prefix"])
           when "members" then client.members(op["channel"])
           when "history" then client.history(op["channel"], since: op["since"], limit: op["limit"])
           when "terminate" then client.terminate_user_connections(op["userId"])
           when "parseWebhook" then client.parse_webhook(op["body"].unpack1("m0"), op["headers"])
           else
             raise ArgumentError, "unknown operation #{op["op"]}"
           end
  puts JSON.generate({ "ok" => true, "result" => result })
rescue Pandapush::Error => e
  puts JSON.generate({ "ok" => false, "error" => {
    "class" => e.class.name.split("::").last, "status" => e.status, "code" => e.code,
    "serverMessage" => e.server_message, "message" => e.message, "inspect" => e.inspect,
    "full" => e.full_message(highlight: false), "retryAfter" => e.retry_after,
    "isAuthError" => e.is_a?(Pandapush::AuthError)
  } })
end
"""


class RubySDKTests(SDKEndToEnd, TestCase):
    language = "ruby"

    def setUp(self) -> None:
        self.ruby = requireExecutable("ruby", "apt-get install ruby")

    async def operate(self, op: dict[str, Any], secret: str = SECRET) -> dict[str, Any]:
        return await self.runDriver([self.ruby, "-Ilib", "-e", DRIVER], GEM, op, secret)

    async def unitTests(self) -> ProcessResult:
        result = await runProcess(
            [
                self.ruby,
                "-w",
                "-Ilib",
                "-Itest",
                "-e",
                'Dir["test/test_*.rb"].sort.each { |f| require File.expand_path(f) }',
            ],
            cwd=GEM,
        )
        self.assertNotIn(str(GEM / "lib"), result.stderr, "the gem has Ruby warnings:\n" + result.describe())
        self.assertIn(" 0 failures, 0 errors", result.stdout, result.describe())
        return result
