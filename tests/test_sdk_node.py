"""
The ``pandapush`` npm package (``sdks/node``) against a real pandapush: its ``node --test`` suite
and the end-to-end checks of :class:`tests.support.sdks.SDKEndToEnd`, each operation a ``node``
process importing the package as an ES module (the unit tests cover ``require``).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from tests.support.requirements import requireExecutable
from tests.support.sdks import SDKS, SECRET, ProcessResult, SDKEndToEnd, runProcess

PACKAGE = SDKS / "node"

# One operation with the package; the outcome as one JSON line.
DRIVER = """
import util from 'node:util';
import { AuthError, Client, PandapushError } from PACKAGE_URL;
const op = JSON.parse(process.env.PANDAPUSH_OP);
const client = new Client({
  url: op.url ?? process.env.PANDAPUSH_URL,
  keyId: process.env.PANDAPUSH_KEY_ID,
  secret: process.env.PANDAPUSH_SECRET,
  appId: process.env.PANDAPUSH_APP_ID,
  maxRetries: op.retries ?? 0,
});
try {
  let result = null;
  if (op.op === 'publish') {
    for (let i = 0; i < (op.times ?? 1); i += 1) {
      await client.publish(op.channel, op.data, { idempotencyKey: op.idempotencyKey });
    }
  } else if (op.op === 'token') {
    const { channel, pub, sub, presence, expiresIn, user } = op;
    result = await client.token({ channel, pub, sub, presence, expiresIn, user });
  } else if (op.op === 'publishMany') {
    result = await client.publishMany(op.channels, op.data);
  } else if (op.op === 'publishBatch') {
    result = await client.publishBatch(op.messages);
  } else if (op.op === 'channel') {
    result = await client.channel(op.name);
  } else if (op.op === 'channels') {
    result = await client.channels(op.prefix ? { prefix: op.prefix } : {});
  } else if (op.op === 'members') {
    result = await client.members(op.channel);
  } else if (op.op === 'history') {
    result = await client.history(op.channel, { since: op.since, limit: op.limit });
  } else if (op.op === 'terminate') {
    result = await client.terminateUserConnections(op.userId);
  } else if (op.op === 'parseWebhook') {
    result = await client.parseWebhook(Buffer.from(op.body, 'base64'), op.headers);
  } else {
    throw new Error(`unknown operation ${op.op}`);
  }
  console.log(JSON.stringify({ ok: true, result }));
} catch (e) {
  if (!(e instanceof PandapushError)) throw e;
  console.log(JSON.stringify({ ok: false, error: {
    class: e.name, status: e.status, code: e.code, serverMessage: e.serverMessage, message: e.message,
    inspect: util.inspect(e), full: e.stack, retryAfter: e.retryAfter, isAuthError: e instanceof AuthError,
  } }));
}
""".replace("PACKAGE_URL", json.dumps((PACKAGE / "index.mjs").as_uri()))


class NodeSDKTests(SDKEndToEnd, TestCase):
    language = "node"

    def setUp(self) -> None:
        self.node = requireExecutable("node", "apt-get install nodejs")

    async def operate(self, op: dict[str, Any], secret: str = SECRET) -> dict[str, Any]:
        return await self.runDriver([self.node, "--input-type=module", "-e", DRIVER], PACKAGE, op, secret)

    async def unitTests(self) -> ProcessResult:
        files = sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "test").glob("*.test.*js"))
        self.assertGreaterEqual(len(files), 3)
        result = await runProcess([self.node, "--test", *files], cwd=PACKAGE)
        self.assertIn("# fail 0", result.stdout, result.describe())
        return result
