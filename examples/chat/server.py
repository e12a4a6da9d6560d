#!/usr/bin/env python3
"""
The chat's backend: serves the page and hands each visitor the tokens to chat, with Python's
standard library and ``pandapush_client`` (sdks/python). Nothing else: no framework.

    python3 examples/chat/server.py              # then open http://localhost:8000/

The browser never sees the key's secret. It asks ``POST /token`` for two tokens: one to join the
presence channel as a member (``sub`` + ``presence``; no ``pub``, so nobody can forge a
"joined" or "left" notice there) and one to read and write the messages channel (``sub`` +
``pub``). Here anyone gets them; a real application checks its own session first and takes
the member's id and name from it, not from the request.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
try:
    from pandapush_client import Client
except ImportError:  # not installed: the copy in this repository
    sys.path.insert(0, str(HERE.parents[1] / "sdks" / "python" / "src"))
    from pandapush_client import Client

PANDAPUSH_URL = os.environ.get("PANDAPUSH_URL", "http://localhost:3000").rstrip("/")
APP_ID = os.environ.get("PANDAPUSH_APP_ID", "exampleApp0000000001")
pandapush = Client(
    PANDAPUSH_URL,
    os.environ.get("PANDAPUSH_KEY_ID", "PSIDexampleKey000001"),
    os.environ.get("PANDAPUSH_KEY_SECRET", "example-secret-0123456789"),
)
PRESENCE = f"/{APP_ID}/presence/chat"
MESSAGES = f"/{APP_ID}/private/chat/messages"
TOKEN_LIFETIME = 3600
USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def tokens(name: str, userId: str) -> dict[str, Any]:
    member = {"id": userId, "name": name}
    return {
        "user": member,
        "presence": {
            "channel": PRESENCE,
            "token": pandapush.token(PRESENCE, sub=True, presence=member, expires_in=TOKEN_LIFETIME),
        },
        "messages": {
            "channel": MESSAGES,
            "token": pandapush.token(MESSAGES, sub=True, pub=True, expires_in=TOKEN_LIFETIME),
        },
    }


class ChatHandler(BaseHTTPRequestHandler):
    server_version = "pandapush-chat-example"

    def _send(self, status: int, body: bytes, contentType: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", contentType)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/":
            self._send(404, b"Not found\n", "text/plain; charset=utf-8")
            return
        # "<" escaped: the configuration sits inside a <script> element.
        config = json.dumps({"pandapush": PANDAPUSH_URL}).replace("<", "\\u003c")
        page = (HERE / "index.html").read_text("utf-8")
        page = page.replace("{{PANDAPUSH_URL}}", PANDAPUSH_URL).replace("{{CONFIG}}", config)
        self._send(200, page.encode("utf-8"), "text/html; charset=utf-8")

    def do_POST(self) -> None:
        if self.path != "/token":
            self._send(404, b"Not found\n", "text/plain; charset=utf-8")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            asked = json.loads(self.rfile.read(min(length, 4096)) or b"{}")
            name = str(asked.get("name") or "").strip()[:40]
        except (ValueError, AttributeError):
            self._send(400, b'{"message": "send {\\"name\\": ...}"}', "application/json")
            return
        if not name:
            self._send(400, b'{"message": "a name is required"}', "application/json")
            return
        # A returning visitor keeps their id (their other tabs are the same member).
        userId = str(asked.get("id") or "")
        if not USER_ID.match(userId):
            userId = "u" + secrets.token_hex(6)
        self._send(200, json.dumps(tokens(name, userId)).encode(), "application/json")

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write("chat: " + (format % args) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="The pandapush chat example's backend")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--host", default="127.0.0.1")
    options = parser.parse_args()
    httpd = ThreadingHTTPServer((options.host, options.port), ChatHandler)
    where = f"http://{options.host}:{httpd.server_address[1]}/"
    print(f"chat at {where} (pandapush at {PANDAPUSH_URL})", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
