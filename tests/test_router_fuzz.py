"""Hostile input, generated: the router answers everything, raises nothing, and keeps serving."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pandapush.bayeux import json
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.json import decodeMessages
from pandapush.engines.memory import MemoryEngine
from pandapush.router import BayeuxRouter

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
channels = st.one_of(
    st.sampled_from(
        [
            "/meta/handshake",
            "/meta/connect",
            "/meta/subscribe",
            "/meta/unsubscribe",
            "/meta/disconnect",
            "/meta/x",
            "/a",
            "/a/*",
            "/a/**",
            "/service/x",
            "",
            "/",
        ]
    ),
    st.text(max_size=30),
    values,
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "channel": channels,
        "id": values,
        "clientId": st.one_of(st.just("CLIENT"), values),
        "data": values,
        "subscription": st.one_of(channels, st.lists(channels, max_size=3)),
        "version": st.one_of(st.just("1.0"), values),
        "supportedConnectionTypes": st.one_of(st.just(["long-polling"]), values),
        "connectionType": st.one_of(
            st.sampled_from(["long-polling", "websocket", "eventsource", "x"]), values
        ),
        "advice": st.one_of(st.fixed_dictionaries({"timeout": values}), values),
        "ext": values,
    },
)
batches = st.lists(st.one_of(messages, values), max_size=5)


class RouterFuzzTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = MemoryEngine(self.clock, timeout=1, expiry=1)
        self.router = BayeuxRouter(self.engine, self.clock, timeout=1)
        replies: list[Any] = self.successResultOf(
            self.router.process(
                [
                    {
                        "channel": "/meta/handshake",
                        "version": "1.0",
                        "supportedConnectionTypes": ["long-polling"],
                    }
                ],
                MessageContext("long-polling"),
            )
        )
        self.clientId = replies[0]["clientId"]

    def _withClient(self, message: Any) -> Any:
        if isinstance(message, dict) and message.get("clientId") == "CLIENT":
            return {**message, "clientId": self.clientId}
        return message

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(batches)
    def test_everyMessageAnswered(self, batch: list[Any]) -> None:
        """Any batch: no exception, at least one reply per message, every reply encodable and well formed."""
        batch = [self._withClient(m) for m in batch]
        d = self.router.process(batch, MessageContext("long-polling"))
        self.clock.advance(2)
        replies = self.successResultOf(d)
        if batch:
            self.assertGreaterEqual(len(replies), 1)
        for reply in replies:
            json.encodeReplies([reply])
            if isinstance(reply, dict):
                self.assertIn("successful", reply)
                if not reply["successful"]:
                    self.assertRegex(reply["error"], r"^\d{3}:[^:]*:.+")
        self.assertEqual(self.flushLoggedErrors(), [])

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_bodiesDecodeOrRefuse(self, body: bytes) -> None:
        """Arbitrary bytes either decode to an object/array or are refused, never an exception."""
        result = decodeMessages(body)
        self.assertTrue(result is None or isinstance(result, dict | list))
