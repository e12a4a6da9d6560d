"""
Every example in ``examples/`` runs, as its README says, against the server ``examples/dev-server.sh``
starts (so the defaults baked into the examples and that script agree: the examples are given
nothing but ``PANDAPUSH_URL``).

- the notification feed: ``notify.py``, ``notify.rb`` and ``notify.mjs`` each publish with their
  language's library, and the Faye example subscriber prints all three;
- the Faye client: ``subscribe.js`` (public channel, private wildcard) and ``publish.js``;
- the chat: its stdlib backend, two people in headless Chromium, presence and messages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import treq
from twisted.internet import defer, error
from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support import REPO_ROOT
from tests.support.browser import BrowserThread, chromiumAvailable
from tests.support.node import NODE_DIR, NodeScript, requireNode
from tests.support.ports import freePort
from tests.support.process import PandapushProcess
from tests.support.requirements import missing, requireExecutable
from tests.support.sdks import runProcess
from tests.support.waiting import sleep

EXAMPLES = REPO_ROOT / "examples"
# What the examples default to (examples/dev-server.sh seeds them).
APP = "exampleApp0000000001"


class ExampleServer(PandapushProcess):
    """pandapush started by ``examples/dev-server.sh``, on a free port instead of 3000."""

    def command(self) -> list[str]:
        return [
            "/bin/sh",
            str(EXAMPLES / "dev-server.sh"),
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
        ]


def twistd() -> str:
    beside = Path(sys.executable).with_name("twistd")
    return str(beside) if beside.exists() else requireExecutable("twistd", "pip install twisted")


def exampleEnv(server: PandapushProcess) -> dict[str, str]:
    # The Faye package comes from tests/node's pinned install, not an `npm install` in the example.
    return {"PANDAPUSH_URL": server.url, "NODE_PATH": str(NODE_DIR / "node_modules")}


class _Background(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred[None] = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class ExampleTestCase(TestCase):
    timeout = 120

    async def startServer(self) -> PandapushProcess:
        self.server = await ExampleServer.started(self, env={"TWISTD": twistd()})
        return self.server

    def subscriber(self, channel: str) -> NodeScript:
        """``node examples/faye-client/subscribe.js <channel>``, stopped at cleanup."""
        script = NodeScript(
            str(EXAMPLES / "faye-client" / "subscribe.js"), channel, env=exampleEnv(self.server), timeout=60
        )
        script.start()
        self.addCleanup(script.stop)
        return script

    async def background(self, command: list[str], env: dict[str, str]) -> _Background:
        """A long-running example process, killed at cleanup."""
        protocol = _Background()
        childEnv = {**os.environ, **env}
        transport = IReactorProcess(_reactor).spawnProcess(
            protocol, command[0], command, env=childEnv, path=str(REPO_ROOT)
        )

        async def kill() -> None:
            try:
                transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass
            await protocol.ended

        self.addCleanup(kill)
        return protocol

    def messages(self, script: NodeScript) -> list[dict[str, Any]]:
        return [e for e in script.events if e.get("event") == "message"]


class NotificationFeedTests(ExampleTestCase):
    async def test_eachLibraryNotifiesTheFeed(self) -> None:
        """notify.py, notify.rb and notify.mjs publish; the Faye subscriber prints each notification."""
        requireNode()
        ruby = requireExecutable("ruby", "apt-get install ruby")
        await self.startServer()
        channel = f"/{APP}/private/users/42/notifications"
        feed = self.subscriber(channel)
        await feed.waitForEvent("subscribed", channel=channel)
        notifiers = {
            # -S: no site-packages, the standard library and the repository's pandapush_client only.
            "python": [sys.executable, "-S", str(EXAMPLES / "notifications" / "notify.py")],
            "ruby": [ruby, str(EXAMPLES / "notifications" / "notify.rb")],
            "node": [requireNode(), str(EXAMPLES / "notifications" / "notify.mjs")],
        }
        for language, command in notifiers.items():
            result = await runProcess(
                [*command, "42", f"Your {language} export is ready \u2713"],
                cwd=REPO_ROOT,
                env=exampleEnv(self.server),
            )
            self.assertEqual(result.code, 0, result.describe())
            self.assertEqual(result.stdout.strip(), f"sent to {channel}", result.describe())
        await feed.waitFor(lambda e: len(self.messages(feed)) == 3)
        received = [(m["channel"], m["data"]["from"], m["data"]["text"]) for m in self.messages(feed)]
        self.assertEqual(
            received,
            [(channel, language, f"Your {language} export is ready \u2713") for language in notifiers],
        )
        self.assertTrue(all(m["data"]["at"] for m in self.messages(feed)))

    async def test_refusedNotification(self) -> None:
        """A wrong secret: the notifier says why (the typed error's text) and exits 1."""
        await self.startServer()
        env = {**exampleEnv(self.server), "PANDAPUSH_KEY_SECRET": "wrong-secret-for-this-test"}
        result = await runProcess(
            [sys.executable, "-S", str(EXAMPLES / "notifications" / "notify.py"), "42", "hi"],
            cwd=REPO_ROOT,
            env=env,
        )
        self.assertEqual(result.code, 1, result.describe())
        self.assertIn("HTTP 403", result.stderr)
        self.assertIn("Invalid secret", result.stderr)
        self.assertNotIn("wrong-secret-for-this-test", result.stderr)


class FayeClientExampleTests(ExampleTestCase):
    async def test_publishAndSubscribe(self) -> None:
        """subscribe.js on a public channel and a private wildcard; publish.js (pub tokens) reaches both."""
        requireNode()
        await self.startServer()
        news = f"/{APP}/public/news"
        inbox = f"/{APP}/private/users/7/**"
        newsFeed, inboxFeed = self.subscriber(news), self.subscriber(inbox)
        await newsFeed.waitForEvent("subscribed", channel=news)
        await inboxFeed.waitForEvent("subscribed", channel=inbox)
        publish = [requireNode(), str(EXAMPLES / "faye-client" / "publish.js")]
        for channel, text in ((news, '{"text": "hello"}'), (f"/{APP}/private/users/7/inbox", "plain text")):
            result = await runProcess([*publish, channel, text], cwd=REPO_ROOT, env=exampleEnv(self.server))
            self.assertEqual(result.code, 0, result.describe())
            self.assertIn('"event":"published"', result.stdout)
        await newsFeed.waitFor(lambda e: e.get("event") == "message")
        await inboxFeed.waitFor(lambda e: e.get("event") == "message")
        self.assertEqual(
            self.messages(newsFeed), [{"event": "message", "channel": news, "data": {"text": "hello"}}]
        )
        self.assertEqual(
            self.messages(inboxFeed),
            [{"event": "message", "channel": f"/{APP}/private/users/7/inbox", "data": "plain text"}],
        )


class ChatExampleTests(ExampleTestCase):
    async def openChat(self, url: str) -> Any:
        page, _ = await self.browser.call(self.browser.newPage)
        await self.browser.call(page.goto, url)
        return page

    async def members(self, page: Any) -> list[str]:
        return await self.browser.call(
            page.eval_on_selector_all, "#members li", "els => els.map(e => e.textContent)"
        )  # type: ignore[no-any-return]

    async def waitFor(self, page: Any, predicate: str, arg: Any = None) -> None:
        try:
            await self.browser.call(page.wait_for_function, predicate, arg=arg, timeout=15000)
        except Exception as e:
            members = await self.members(page)
            raise AssertionError(
                f"timed out waiting for {predicate} ({e}); members: {members}; console: {page.consoleLines}"
            ) from None

    async def test_twoPeopleChat(self) -> None:
        """Two people join: both in presence, a message reaches both as text, a leaver disappears."""
        unavailable = chromiumAvailable()
        if unavailable:
            missing(unavailable)
        await self.startServer()
        port = freePort()
        backend = await self.background(
            [sys.executable, "-S", str(EXAMPLES / "chat" / "server.py"), "--port", str(port)],
            exampleEnv(self.server),
        )
        chat = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                response = await treq.get(chat + "/", persistent=False, timeout=2)
                await response.content()
                if response.code == 200:
                    break
            except Exception:
                pass
            await sleep(0.05)
        else:
            self.fail(f"the chat backend did not answer: {backend.output.decode('utf-8', 'replace')}")
        self.browser = BrowserThread()
        await self.browser.start()
        self.addCleanup(self.browser.stop)

        ann = await self.openChat(chat + "/?name=Ann")
        bob = await self.openChat(chat + "/?name=Bob")
        both = "() => document.querySelectorAll('#members li').length === 2"
        await self.waitFor(ann, both)
        await self.waitFor(bob, both)
        self.assertEqual(await self.members(ann), ["Ann (you)", "Bob"])
        self.assertEqual(await self.members(bob), ["Ann", "Bob (you)"])

        text = "<b>hi</b> Ann \u2603"
        await self.browser.call(bob.fill, "#text", text)
        await self.browser.call(bob.click, "#send button")
        arrived = (
            "(t) => [...document.querySelectorAll('#messages li')].some(li => li.textContent === 'Bob: ' + t)"
        )
        await self.waitFor(ann, arrived, text)
        await self.waitFor(bob, arrived, text)
        # Text, never HTML: the <b> stays characters.
        self.assertEqual(
            await self.browser.call(ann.eval_on_selector_all, "#messages b", "els => els.length"), 0
        )

        await self.browser.call(bob.context.close)
        await self.waitFor(ann, "() => document.querySelectorAll('#members li').length === 1")
        self.assertEqual(await self.members(ann), ["Ann (you)"])
        self.assertEqual(await self.browser.call(ann.text_content, "#status"), "connected")
        self.assertEqual([line for line in ann.consoleLines if line.startswith(("pageerror", "error"))], [])
        await self.browser.call(ann.context.close)
