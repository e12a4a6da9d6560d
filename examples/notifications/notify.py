#!/usr/bin/env python3
"""
Send a user a notification from Python (pandapush_client, sdks/python):

    python3 examples/notifications/notify.py 42 "Your export is ready"

It lands on ``/<app>/private/users/<user>/notifications``; watch it with
``node examples/faye-client/subscribe.js /exampleApp0000000001/private/users/42/notifications``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

try:
    from pandapush_client import Client, PandapushError
except ImportError:  # not installed: the copy in this repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdks" / "python" / "src"))
    from pandapush_client import Client, PandapushError


def main(user: str, text: str) -> int:
    pandapush = Client(
        os.environ.get("PANDAPUSH_URL", "http://localhost:3000"),
        os.environ.get("PANDAPUSH_KEY_ID", "PSIDexampleKey000001"),
        os.environ.get("PANDAPUSH_KEY_SECRET", "example-secret-0123456789"),
    )
    app = os.environ.get("PANDAPUSH_APP_ID", "exampleApp0000000001")
    channel = f"/{app}/private/users/{user}/notifications"
    notification = {"text": text, "from": "python", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        pandapush.publish(channel, notification)
    except PandapushError as error:  # typed: ForbiddenError, UnavailableError, NetworkError...
        print(f"not sent: {error}", file=sys.stderr)
        return 1
    print(f"sent to {channel}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: notify.py <user id> <text>")
    sys.exit(main(sys.argv[1], sys.argv[2]))
