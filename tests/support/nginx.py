"""
Debian's nginx in front of pandapush nodes, with the repository's example config.

``NginxProcess`` writes a minimal ``nginx.conf`` into a prefix directory of its own
(pid file, logs, temporary files all there) that includes ``deploy/nginx/pandapush.conf``
with only its addresses changed: its ``listen`` lines become one free port on
127.0.0.1 and its upstream servers become the test's nodes. It runs in the
foreground (``daemon off``) as root, like the packaged nginx, and counts as started
once ``/health_check.json`` answers through it.

``parseConfig`` reads nginx's syntax into nested blocks, so tests can check the
values the example sets (timeouts, body size, headers) where they apply.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.web.client import Agent

from tests.support import REPO_ROOT
from tests.support.ports import freePort
from tests.support.process import PandapushProcess

__all__ = ["CONFIG_PATH", "Block", "NginxProcess", "agentFrom", "parseConfig"]

CONFIG_PATH = REPO_ROOT / "deploy" / "nginx" / "pandapush.conf"
UPSTREAM_SERVER = re.compile(r"^(\s*)server\s+\S+;\s*$", re.M)


@dataclass
class Block:
    """A directive with its arguments and, for a block directive, what is inside."""

    name: str
    args: list[str]
    children: list[Block] = field(default_factory=list)

    def find(self, name: str, *args: str) -> list[Block]:
        """Direct children named ``name`` (whose arguments start with ``args``)."""
        return [c for c in self.children if c.name == name and c.args[: len(args)] == list(args)]

    def one(self, name: str, *args: str) -> Block:
        found = self.find(name, *args)
        if len(found) != 1:
            raise AssertionError(f"{len(found)} {name} {' '.join(args)} in {self.name} {' '.join(self.args)}")
        return found[0]

    def value(self, name: str) -> str | None:
        """The first argument of the direct child ``name``, or None."""
        found = self.find(name)
        return found[0].args[0] if found and found[0].args else None


_TOKEN = re.compile(r"""\s+|#[^\n]*|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([{};])|([^\s{};"'#]+)""")


def parseConfig(text: str) -> Block:
    """nginx's configuration syntax as a tree under a ``main`` block."""
    root = Block("main", [])
    stack = [root]
    words: list[str] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"cannot read nginx config at {text[position : position + 30]!r}")
        position = match.end()
        double, single, punctuation, word = match.groups()
        if punctuation == ";":
            stack[-1].children.append(Block(words[0], words[1:]))
            words = []
        elif punctuation == "{":
            block = Block(words[0], words[1:])
            stack[-1].children.append(block)
            stack.append(block)
            words = []
        elif punctuation == "}":
            if words or len(stack) == 1:
                raise ValueError("unbalanced } in nginx config")
            stack.pop()
        elif double is not None or single is not None:
            words.append(double if double is not None else single)
        elif word is not None:
            words.append(word)
    if words or len(stack) != 1:
        raise ValueError("nginx config ends inside a directive or block")
    return root


def adaptedConfig(text: str, port: int, upstreams: list[str]) -> str:
    """The example with its listen lines on 127.0.0.1:``port`` and its upstream servers ``upstreams``."""
    listens = re.findall(r"^\s*listen\s+[^;]+;", text, re.M)
    if not listens:
        raise AssertionError("no listen line in the nginx example")
    text = text.replace(listens[0], f"    listen 127.0.0.1:{port};", 1)
    for other in listens[1:]:
        text = text.replace(other, "", 1)
    servers = UPSTREAM_SERVER.findall(text)
    if not servers:
        raise AssertionError("no upstream server line in the nginx example")
    first = True

    def replace(match: re.Match[str]) -> str:
        nonlocal first
        if not first:
            return ""
        first = False
        return "\n".join(f"{match.group(1)}server {address};" for address in upstreams)

    return UPSTREAM_SERVER.sub(replace, text)


class NginxProcess(PandapushProcess):
    """nginx -p <prefix> -c nginx.conf -g 'daemon off;', the example config in front of ``upstreams``."""

    sourceOnPath = False

    def __init__(self, nginx: str, upstreams: list[str], config: str | None = None) -> None:
        super().__init__(port=freePort())
        self.nginx = nginx
        self.upstreams = upstreams
        self.prefix = Path(tempfile.mkdtemp(prefix="pandapush-nginx-"))
        self.prefix.chmod(0o755)
        self.config = config if config is not None else CONFIG_PATH.read_text()

    def writeConfig(self) -> Path:
        prefix = self.prefix
        (prefix / "pandapush.conf").write_text(adaptedConfig(self.config, self.port, self.upstreams))
        main = prefix / "nginx.conf"
        main.write_text(
            f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/pandapush.conf;
}}
"""
        )
        return main

    def command(self) -> list[str]:
        main = self.writeConfig()
        return [self.nginx, "-p", str(self.prefix), "-c", str(main), "-g", "daemon off;"]

    def testCommand(self) -> list[str]:
        """``nginx -t`` of the same configuration."""
        main = self.writeConfig()
        return [self.nginx, "-t", "-p", str(self.prefix), "-c", str(main)]

    def childEnvironment(self) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def removeScratch(self) -> None:
        super().removeScratch()
        if not self.running:
            shutil.rmtree(self.prefix, ignore_errors=True)


class _BoundEndpoints:
    """Connections from a chosen source address (one of 127.0.0.0/8: all loopback on Linux)."""

    def __init__(self, reactor: Any, source: str) -> None:
        self.reactor = reactor
        self.source = source

    def endpointForURI(self, uri: Any) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(
            self.reactor, uri.host.decode(), uri.port, timeout=10, bindAddress=(self.source, 0)
        )


def agentFrom(source: str) -> Agent:
    """An HTTP agent whose connections come from ``source`` (e.g. 127.0.0.2)."""
    from twisted.internet import reactor

    return Agent.usingEndpointFactory(reactor, _BoundEndpoints(reactor, source))


def gather(*coroutines: Any) -> defer.Deferred[list[Any]]:
    return defer.gatherResults([defer.ensureDeferred(c) for c in coroutines])
