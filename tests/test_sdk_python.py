"""
``pandapush_client`` (``sdks/python``) against a real pandapush: its unit tests, run with the
interpreter's ``-S`` (no site-packages: the standard library alone), and the end-to-end checks of
:class:`tests.support.sdks.SDKEndToEnd`, with the synchronous client called from a thread as a
Django or Flask process would call it.
"""

from __future__ import annotations

import base64
import sys
import traceback
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support.sdks import APP, KEY, SDKS, SECRET, ProcessResult, SDKEndToEnd, runProcess

if str(SDKS / "python" / "src") not in sys.path:
    sys.path.insert(0, str(SDKS / "python" / "src"))

from pandapush_client import AuthError, Client, PandapushError


def describe(error: PandapushError) -> dict[str, Any]:
    return {
        "class": type(error).__name__,
        "status": error.status,
        "code": error.code,
        "serverMessage": error.message,
        "message": str(error),
        "inspect": repr(error),
        "full": "".join(traceback.format_exception(error)),
        "retryAfter": error.retry_after,
        "isAuthError": isinstance(error, AuthError),
    }


class PythonSDKTests(SDKEndToEnd, TestCase):
    language = "python"

    async def operate(self, op: dict[str, Any], secret: str = SECRET) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            retries = op.get("retries", 0)
            url = op.get("url", self.pandapush.url)
            with Client(url, KEY, secret, app_id=APP, max_retries=retries) as client:
                try:
                    if op["op"] == "publish":
                        key = op.get("idempotencyKey")
                        for _ in range(op.get("times", 1)):
                            client.publish(op["channel"], op["data"], idempotency_key=key)
                        return {"ok": True, "result": None}
                    if op["op"] != "token":
                        return {"ok": True, "result": self.serverCall(client, op)}
                    token = client.token(
                        op["channel"],
                        pub=op.get("pub", False),
                        sub=op.get("sub", False),
                        presence=op.get("presence"),
                        expires_in=op.get("expiresIn"),
                        user=op.get("user"),
                    )
                    return {"ok": True, "result": token}
                except PandapushError as error:
                    return {"ok": False, "error": describe(error)}

        return await deferToThread(work)  # type: ignore[no-any-return]

    @staticmethod
    def serverCall(client: Client, op: dict[str, Any]) -> Any:
        """The server API's calls (issue 16), as a Django view would make them."""
        name = op["op"]
        if name == "publishMany":
            return client.publish_many(op["channels"], op["data"])
        if name == "publishBatch":
            return client.publish_batch(op["messages"])
        if name == "channel":
            return client.channel(op["name"])
        if name == "channels":
            return client.channels(op.get("prefix"))
        if name == "members":
            return client.members(op["channel"])
        if name == "history":
            return client.history(op["channel"], since=op.get("since"), limit=op.get("limit"))
        if name == "terminate":
            return client.terminate_user_connections(op["userId"])
        if name == "parseWebhook":
            return client.parse_webhook(base64.b64decode(op["body"]), op["headers"])
        raise ValueError(f"unknown operation {name}")

    async def unitTests(self) -> ProcessResult:
        return await runProcess(
            [sys.executable, "-S", "-m", "unittest", "discover", "-s", "tests"],
            cwd=SDKS / "python",
            env={"PYTHONPATH": "src"},
        )
