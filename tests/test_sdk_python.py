"""
``pandapush_client`` (``sdks/python``) against a real pandapush: its unit tests, run with the
interpreter's ``-S`` (no site-packages: the standard library alone), and the end-to-end checks of
:class:`tests.support.sdks.SDKEndToEnd`, with the synchronous client called from a thread as a
Django or Flask process would call it.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support.sdks import KEY, SDKS, SECRET, ProcessResult, SDKEndToEnd, runProcess

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
            with Client(self.pandapush.url, KEY, secret, max_retries=0) as client:
                try:
                    if op["op"] == "publish":
                        for _ in range(op.get("times", 1)):
                            client.publish(op["channel"], op["data"])
                        return {"ok": True, "result": None}
                    token = client.token(
                        op["channel"],
                        pub=op.get("pub", False),
                        sub=op.get("sub", False),
                        presence=op.get("presence"),
                        expires_in=op.get("expiresIn"),
                    )
                    return {"ok": True, "result": token}
                except PandapushError as error:
                    return {"ok": False, "error": describe(error)}

        return await deferToThread(work)  # type: ignore[no-any-return]

    async def unitTests(self) -> ProcessResult:
        return await runProcess(
            [sys.executable, "-S", "-m", "unittest", "discover", "-s", "tests"],
            cwd=SDKS / "python",
            env={"PYTHONPATH": "src"},
        )
