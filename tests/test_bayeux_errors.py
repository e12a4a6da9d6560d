"""Bayeux error strings, ``code:arg1,arg2:message``, whatever the arguments echo."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.errors import BayeuxError, formatError
from pandapush.engines.memory import MemoryEngine
from pandapush.router import BayeuxRouter

#: The grammar: a code, arguments without separators or line breaks, then the message.
GRAMMAR = re.compile(r"(\d{3}):([^:,\x00-\x1f\x7f]*(?:,[^:,\x00-\x1f\x7f]*)*):(.*)", re.DOTALL)


class FormatTests(SynchronousTestCase):
    @given(st.lists(st.text(max_size=12), max_size=4), st.text(max_size=20))
    def test_alwaysWellFormed(self, params: list[str], message: str) -> None:
        """Any arguments: the string parses as the grammar says, and each argument comes back unescaped."""
        text = formatError(405, params, message)
        parsed = GRAMMAR.fullmatch(text)
        assert parsed is not None, text
        self.assertEqual(parsed.group(3), message)
        if params:
            self.assertEqual([unquote(p) for p in parsed.group(2).split(",")], params)

    def test_ordinaryAsTheyAre(self) -> None:
        """Channel names, client ids and connection types are echoed unchanged."""
        self.assertEqual(str(BayeuxError.channelInvalid("/a/b*")), "405:/a/b*:Invalid channel")
        self.assertEqual(
            str(BayeuxError.conntypeMismatch("long-polling", "websocket")),
            "301:long-polling,websocket:Connection types not supported",
        )
        self.assertEqual(
            str(BayeuxError(402, [], "Missing required parameter")), "402::Missing required parameter"
        )

    def test_hostileEscaped(self) -> None:
        """A separator, the escape or a line break in an argument is percent-encoded."""
        self.assertEqual(str(BayeuxError.channelInvalid(":\n")), "405:%3A%0A:Invalid channel")
        self.assertEqual(str(BayeuxError.channelInvalid("a,b%")), "405:a%2Cb%25:Invalid channel")

    def test_routerReply(self) -> None:
        """A publish to a channel named ``:`` and a line break is refused with a well-formed error."""
        clock = Clock()
        router = BayeuxRouter(MemoryEngine(clock, timeout=1, expiry=1), clock, timeout=1)
        context = MessageContext("long-polling")
        handshake: Any
        (handshake,) = self.successResultOf(
            router.process(
                [
                    {
                        "channel": "/meta/handshake",
                        "version": "1.0",
                        "supportedConnectionTypes": ["long-polling"],
                    }
                ],
                context,
            )
        )
        reply: Any
        (reply,) = self.successResultOf(
            router.process(
                [{"channel": ":\n", "data": 1, "clientId": handshake["clientId"]}],
                MessageContext("long-polling"),
            )
        )
        self.assertEqual(reply["error"], "405:%3A%0A:Invalid channel")
