"""
What the deployment tests (image, compose, systemd, nginx) do alike, over real sockets:
JSON requests, the admin API's application and key, a REST publish delivered to a
websocket subscriber, and the admin password a first start generates.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import treq
from twisted.web.http_headers import Headers

from pandapush.tap import Options
from tests.support import REPO_ROOT
from tests.support.bayeux import WSClient
from tests.support.waiting import eventually

__all__ = [
    "Response",
    "basicAuth",
    "createAppAndKey",
    "dropRedisNamespace",
    "environmentNamesRead",
    "generatedAdminCredentials",
    "publishReachesSubscriber",
    "redisRunning",
    "request",
    "serverOptions",
]


def basicAuth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@dataclass
class Response:
    code: int
    body: bytes
    headers: Any

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        found = self.headers.getRawHeaders(name)
        return found[0] if found else None


async def request(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    agent: Any = None,
) -> Response:
    """One request on a fresh connection; ``body`` is sent as JSON, ``data`` as is."""
    if body is not None:
        data = json.dumps(body).encode()
    allHeaders = {"Content-Type": "application/json", **(headers or {})}
    kwargs: dict[str, Any] = {"persistent": False, "timeout": 15}
    if agent is not None:
        kwargs = {"agent": agent, "timeout": 15}
    response = await treq.request(
        method, url, data=data, headers=Headers({k: [v] for k, v in allHeaders.items()}), **kwargs
    )
    return Response(response.code, await response.content(), response.headers)


def generatedAdminCredentials(log: str) -> dict[str, str] | None:
    """
    The Basic auth header for the admin user and password a first start made, read
    from the start-up banner ("user: admin  password: <generated>", in whatever
    words it uses), or None when the log shows none.
    """
    found = re.search(r"user:?\s*'?(?P<user>[\w.@-]+)'?.*password:?\s*'?(?P<password>[\w-]{16,})'?", log)
    return basicAuth(found["user"], found["password"]) if found else None


async def createAppAndKey(url: str, admin: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """A new application and a key for it through the admin API: ``(appId, key)``."""
    created = await request("POST", url + "/admin/api/applications", {"name": "deploy-test"}, admin)
    assert created.code == 201, (created.code, created.body)
    appId = created.json()["id"]
    key = await request("POST", f"{url}/admin/api/application/{appId}/keys", {"purpose": "test"}, admin)
    assert key.code == 200, (key.code, key.body)
    return appId, key.json()


async def publishReachesSubscriber(
    subscribeUrl: str, publishUrl: str, appId: str, key: dict[str, Any], text: str = "hello"
) -> tuple[bool, str]:
    """
    Subscribe over a websocket at ``subscribeUrl``, publish over REST at ``publishUrl``
    with the key: ``(delivered, what happened)``.
    """
    channel = f"/{appId}/public/messages"
    subscriber = await WSClient(subscribeUrl).start()
    try:
        reply = await subscriber.call({"channel": "/meta/subscribe", "subscription": channel})
        if not reply.get("successful"):
            return False, f"subscribe refused: {reply}"
        published = await request(
            "POST", publishUrl + "/channel" + channel, {"text": text}, basicAuth(key["id"], key["secret"])
        )
        if published.code != 200:
            return False, f"publish answered {published.code}: {published.body!r}"
        delivered = await eventually(
            lambda: any(m.get("data") == {"text": text} for m in subscriber.messages), 5
        )
        return delivered, f"messages: {subscriber.messages}"
    finally:
        subscriber.protocol.transport.loseConnection()


def serverOptions(args: list[str]) -> Options:
    """``twistd pandapush`` options parsed as the server would (a UsageError if refused)."""
    options = Options()
    options.parseOptions(args)
    return options


def environmentNamesRead() -> set[str]:
    """
    Every environment variable name that pandapush's code names (a string literal of
    capitals, digits and underscores): a setting in a deployment file that is not
    among them is a typo or a setting of another program.
    """
    names: set[str] = set()
    for path in (REPO_ROOT / "pandapush").rglob("*.py"):
        names.update(re.findall(r"""["']([A-Z][A-Z0-9_]+)["']""", path.read_text()))
    return names


def relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def redisRunning(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def dropRedisNamespace(namespace: str, host: str = "127.0.0.1", port: int = 6379) -> None:
    """Delete a test's keys (``<namespace>:*``) from the shared Redis, with redis-cli."""
    from tests.support.container import run

    if shutil.which("redis-cli") is None:
        return
    base = ["redis-cli", "-h", host, "-p", str(port)]
    code, output = await run(*base, "--scan", "--pattern", f"{namespace}:*", timeout=60)
    keys = output.split() if code == 0 else []
    for start in range(0, len(keys), 500):
        await run(*base, "DEL", *keys[start : start + 500], timeout=60)
