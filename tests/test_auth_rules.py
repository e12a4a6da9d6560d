"""The pure channel rules of the tenancy contract (``pandapush.auth.rules``)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pandapush.auth import rules
from pandapush.auth.rules import (
    PUBLISH,
    QUERY,
    SUBSCRIBE,
    Allowed,
    KeyAuth,
    KeyFacts,
    Refusal,
    TokenAuth,
    checkGrant,
    checkKey,
    needsAuth,
    parseChannel,
    readAuth,
    tokenCovers,
)
from pandapush.bayeux.channel import matches

CONTRACT_ORDER = [
    "Invalid channel name",
    "No auth supplied",
    "Invalid token",
    "Auth information does not include token or key",
    "Could not find key",
    "Invalid secret",
    "Expired key",
    "Revoked key",
    "Invalid token provided",
    "Token does not match channel",
    "Token does not allow subscribing",
    "Token does not allow publishing",
    "No presence id specified in presence subscription",
]


def channel(name: str, operation: str = SUBSCRIBE):  # type: ignore[no-untyped-def]
    parsed = parseChannel(name, operation)
    assert parsed is not None, name
    return parsed


class RefusalTests(SynchronousTestCase):
    def test_contractOrder(self) -> None:
        """The refusals, in declaration order, are exactly the contract's texts in its order."""
        self.assertEqual([r.text for r in Refusal], CONTRACT_ORDER)

    def test_bayeuxError(self) -> None:
        """Over Bayeux a refusal is ``code::text`` (Faye shows the text as ``message``)."""
        self.assertEqual(Refusal.INVALID_TOKEN.bayeuxError, "401::Invalid token")
        self.assertEqual(Refusal.TOKEN_NO_PUBLISH.bayeuxError, "403::Token does not allow publishing")
        self.assertEqual(Refusal.INVALID_CHANNEL.bayeuxError, "405::Invalid channel name")


class ParseChannelTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """Every type with a path parses into app, type and path."""
        for kind in ("public", "private", "presence", "meta"):
            parsed = parseChannel(f"/app1/{kind}/a/b-c_d~e")
            assert parsed is not None
            self.assertEqual(parsed.appId, "app1")
            self.assertEqual(parsed.type, kind)
            self.assertEqual(parsed.path, ("a", "b-c_d~e"))

    def test_invalid(self) -> None:
        """Wrong types, missing paths, odd characters and misplaced wildcards are refused."""
        for name in [
            "/foo",
            "/app/**",
            "/app/*",
            "/**",
            "/app/private",
            "/app/private/",
            "/app/secret/x",
            "/app/private/a//b",
            "/app/private/a b",
            "/app/private/a$b",
            "/app/private/**/a",
            "/app/private/*/a",
            "/app/private/***",
            "app/private/a",
            "/app*/private/a",
            "/*/private/a",
            "",
            None,
            42,
            "/app/private/a/",
        ]:
            self.assertIsNone(parseChannel(name, SUBSCRIBE), name)

    @given(
        st.text(alphabet="/abc*-_~.$ \né", max_size=24)
        | st.builds(
            lambda kind, rest: f"/app/{kind}/{rest}",
            st.sampled_from(["public", "private", "presence", "meta", "other", ""]),
            st.text(alphabet="/ab*~-_\n", max_size=12),
        ),
        st.sampled_from([SUBSCRIBE, PUBLISH, QUERY]),
    )
    def test_segmentBySegment(self, name: str, operation: str) -> None:
        """
        The one expression answers as the contract's rule read segment by segment:
        split on ``/``, an application and a known type, every path segment of
        ``[A-Za-z0-9_~-]`` (a wildcard last, to subscribe only), no meta to publish.
        """
        expected = None
        parts = name.split("/")
        if len(parts) >= 4 and parts[0] == "" and parts[2] in rules.CHANNEL_TYPES:
            segment = "[A-Za-z0-9_~-]+"
            appId, kind, *path = parts[1:]
            wildcard = path[-1] in ("*", "**")
            if (
                re.fullmatch(segment, appId)
                and all(re.fullmatch(segment, part) for part in path[:-1])
                and (re.fullmatch(segment, path[-1]) or (wildcard and operation == SUBSCRIBE))
                and not (operation == PUBLISH and kind == "meta")
            ):
                expected = rules.TenantChannel(name, appId, kind, tuple(path))
        self.assertEqual(rules._parseChannel(name, operation), expected)

    def test_wildcardsOnlyToSubscribe(self) -> None:
        """``*``/``**`` are subscription patterns: never a publish target."""
        self.assertIsNotNone(parseChannel("/app/private/a/*", SUBSCRIBE))
        self.assertIsNotNone(parseChannel("/app/private/**", SUBSCRIBE))
        self.assertIsNone(parseChannel("/app/private/a/*", PUBLISH))
        self.assertIsNone(parseChannel("/app/private/**", PUBLISH))

    def test_metaNeverPublished(self) -> None:
        """Nobody publishes to meta channels: for publishing they are not valid names."""
        self.assertIsNotNone(parseChannel("/app/meta/clients", SUBSCRIBE))
        self.assertIsNone(parseChannel("/app/meta/clients", PUBLISH))

    def test_publicSubscribeNeedsNoAuth(self) -> None:
        """Only a subscribe to a public channel goes without credentials."""
        self.assertFalse(needsAuth(SUBSCRIBE, channel("/app/public/a")))
        self.assertFalse(needsAuth(SUBSCRIBE, channel("/app/public/**")))
        self.assertTrue(needsAuth(PUBLISH, channel("/app/public/a", PUBLISH)))
        for kind in ("private", "presence", "meta"):
            self.assertTrue(needsAuth(SUBSCRIBE, channel(f"/app/{kind}/a")))


class ParseCacheTests(SynchronousTestCase):
    """``parseChannel``'s cache: the same answers as parsing, bounded, per operation."""

    def setUp(self) -> None:
        self.saved = {operation: dict(parsed) for operation, parsed in rules._PARSED.items()}
        for parsed in rules._PARSED.values():
            parsed.clear()

        def restore() -> None:
            for operation, parsed in rules._PARSED.items():
                parsed.clear()
                parsed.update(self.saved[operation])

        self.addCleanup(restore)

    @given(
        st.text(alphabet="/abc*-_~.", max_size=20) | st.sampled_from(["/app/private/a/*", "/app/meta/x"]),
        st.sampled_from([SUBSCRIBE, PUBLISH, QUERY, "other"]),
    )
    def test_sameAsParsing(self, name: str, operation: str) -> None:
        """Cached or not, first call or second, the answer is the parser's."""
        expected = rules._parseChannel(name, operation)
        self.assertEqual(parseChannel(name, operation), expected)
        self.assertEqual(parseChannel(name, operation), expected)

    def test_perOperation(self) -> None:
        """A name cached for one operation answers for that operation only."""
        self.assertIsNotNone(parseChannel("/app/private/a/*", SUBSCRIBE))
        self.assertIsNone(parseChannel("/app/private/a/*", PUBLISH))
        self.assertIsNotNone(parseChannel("/app/meta/a", QUERY))
        self.assertIsNone(parseChannel("/app/meta/a", PUBLISH))

    @given(
        st.text(alphabet="/abc*-_~.", max_size=20)
        | st.sampled_from(["/app/private/a/*", "/app/private/**", "/app/meta/x", "/app/private/a"]),
    )
    def test_publishAfterSubscribe(self, name: str) -> None:
        """
        A publish to a name its subscribers parsed first takes their parse when it is
        one a publish may use (the same object); a wildcard or a meta channel is still
        no publish target.
        """
        for parsed in rules._PARSED.values():
            parsed.clear()
        subscribed = parseChannel(name, SUBSCRIBE)
        published = parseChannel(name, PUBLISH)
        self.assertEqual(published, rules._parseChannel(name, PUBLISH))
        if published is not None:
            self.assertIs(published, subscribed)

    def test_notNames(self) -> None:
        """Names that are not strings, hashable or not, are no channel and are not cached."""
        for name in (None, 3, 1.5, True, ("/app/private/a",), ["/app/private/a"], {"a": 1}):
            self.assertIsNone(parseChannel(name, PUBLISH))
        self.assertEqual(rules._PARSED[PUBLISH], {})

    def test_bounded(self) -> None:
        """A full cache is emptied before the next name goes in; long names are never kept."""
        self.patch(rules, "_MAX_PARSED", 3)
        for index in range(3):
            parseChannel(f"/app/private/c{index}", PUBLISH)
        self.assertEqual(len(rules._PARSED[PUBLISH]), 3)
        self.assertEqual(parseChannel("/app/private/c3", PUBLISH), channel("/app/private/c3", PUBLISH))
        self.assertEqual(list(rules._PARSED[PUBLISH]), ["/app/private/c3"])
        long = "/app/private/" + "a" * rules._MAX_CACHED_NAME
        self.assertIsNotNone(parseChannel(long, PUBLISH))
        self.assertNotIn(long, rules._PARSED[PUBLISH])


class ReadAuthTests(SynchronousTestCase):
    def test_none(self) -> None:
        """No auth at all (missing or null) is ``No auth supplied``."""
        self.assertIs(readAuth(None), Refusal.NO_AUTH)

    def test_neither(self) -> None:
        """Auth with neither a token nor a key is the fourth error."""
        for auth in [{}, {"secret": "x"}, "token", [], {"token": ""}, {"key": ""}, {"key": 5}]:
            self.assertIs(readAuth(auth), Refusal.NO_TOKEN_OR_KEY, auth)

    def test_badToken(self) -> None:
        """A token that is not a string, or is enormous, is ``Invalid token``."""
        self.assertIs(readAuth({"token": 12}), Refusal.INVALID_TOKEN)
        self.assertIs(readAuth({"token": {"a": 1}}), Refusal.INVALID_TOKEN)
        self.assertIs(readAuth({"token": "x" * 100_000}), Refusal.INVALID_TOKEN)

    def test_tokenFirst(self) -> None:
        """A token wins over a key sent alongside (as upstream)."""
        self.assertEqual(readAuth({"token": "t", "key": "k", "secret": "s"}), TokenAuth("t"))

    def test_key(self) -> None:
        """Key and secret; a missing secret is an empty one (so: ``Invalid secret``)."""
        self.assertEqual(readAuth({"key": "k", "secret": "s"}), KeyAuth("k", "s"))
        self.assertEqual(readAuth({"key": "k"}), KeyAuth("k", ""))

    def test_secretsHidden(self) -> None:
        """Credentials never show their secret in a repr (logs)."""
        self.assertNotIn("sekrit", repr(KeyAuth("k", "sekrit")))
        self.assertNotIn("tok", repr(TokenAuth("tok")))


KEY = KeyFacts(keyId="PSID1", appId="app", secret="s3cret", expires=None, revoked=False)


class CheckKeyTests(SynchronousTestCase):
    def test_ok(self) -> None:
        self.assertIsNone(checkKey(KEY, "app", 100.0, "s3cret"))
        self.assertIsNone(checkKey(KEY, "app", 100.0, None))

    def test_missing(self) -> None:
        """No key, or a key of another application, is ``Could not find key``."""
        self.assertIs(checkKey(None, "app", 100.0, "s3cret"), Refusal.KEY_NOT_FOUND)
        self.assertIs(checkKey(KEY, "other", 100.0, "s3cret"), Refusal.KEY_NOT_FOUND)

    def test_order(self) -> None:
        """A wrong secret is reported before expiry, expiry before revocation."""
        dead = KeyFacts(keyId="PSID1", appId="app", secret="s3cret", expires=50.0, revoked=True)
        self.assertIs(checkKey(dead, "app", 100.0, "wrong"), Refusal.INVALID_SECRET)
        self.assertIs(checkKey(dead, "app", 100.0, "s3cret"), Refusal.EXPIRED_KEY)
        self.assertIs(checkKey(dead, "app", 10.0, "s3cret"), Refusal.REVOKED_KEY)
        self.assertIs(checkKey(dead, "app", 100.0, None), Refusal.EXPIRED_KEY)


class TokenCoversTests(SynchronousTestCase):
    def test_exact(self) -> None:
        self.assertTrue(tokenCovers("/app/private/a", channel("/app/private/a")))
        self.assertFalse(tokenCovers("/app/private/a", channel("/app/private/a/b")))
        self.assertFalse(tokenCovers("/app/private/a", channel("/app/private/a/*")))
        self.assertFalse(tokenCovers("/app/private/a", channel("/other/private/a")))
        self.assertFalse(tokenCovers("/app/private/a", channel("/app/public/a")))

    def test_star(self) -> None:
        """``/x/*`` covers exactly one more segment, and the ``/x/*`` subscription itself."""
        self.assertTrue(tokenCovers("/app/private/a/*", channel("/app/private/a/b")))
        self.assertTrue(tokenCovers("/app/private/a/*", channel("/app/private/a/*")))
        self.assertFalse(tokenCovers("/app/private/a/*", channel("/app/private/a")))
        self.assertFalse(tokenCovers("/app/private/a/*", channel("/app/private/a/b/c")))
        self.assertFalse(tokenCovers("/app/private/a/*", channel("/app/private/ab")))

    def test_starDoesNotOpenDoubleStar(self) -> None:
        """Upstream hole: a ``/x/*`` token let a client subscribe to ``/x/**``."""
        self.assertFalse(tokenCovers("/app/private/a/*", channel("/app/private/a/**")))
        self.assertFalse(tokenCovers("/app/private/a/*", channel("/app/private/a/b/*")))

    def test_doubleStar(self) -> None:
        """``/x/**`` covers the subtree below ``/x``, names and patterns."""
        for name in ["/app/private/a/b", "/app/private/a/b/c", "/app/private/a/*", "/app/private/a/**"]:
            self.assertTrue(tokenCovers("/app/private/a/**", channel(name)), name)
        self.assertFalse(tokenCovers("/app/private/a/**", channel("/app/private/a")))

    def test_doubleStarIsNotAStringPrefix(self) -> None:
        """Upstream hole: ``/x/**`` matched as a string prefix opened ``/xy``."""
        self.assertFalse(tokenCovers("/app/private/a/**", channel("/app/private/ab")))
        self.assertFalse(tokenCovers("/app/private/a/**", channel("/app/private/ab/c")))
        self.assertFalse(tokenCovers("/ap/**", channel("/app/private/a")))

    def test_tokenChannelNeverCoversAppOrType(self) -> None:
        """A token for ``/app/**`` or ``/**`` is not a valid token channel: it covers nothing."""
        for bad in ["/app/**", "/**", "/app/*", "/*", None, 5, "", "/app/private/a/**/b"]:
            self.assertFalse(tokenCovers(bad, channel("/app/private/a")), bad)

    @given(
        prefix=st.lists(st.sampled_from(["a", "b", "ab", "c-d"]), min_size=0, max_size=3),
        rest=st.lists(st.sampled_from(["a", "b", "ab", "c-d"]), min_size=1, max_size=4),
        tail=st.sampled_from(["", "*", "**"]),
        wildcard=st.sampled_from(["*", "**"]),
        kind=st.sampled_from(["private", "public", "presence", "meta"]),
    )
    def test_matchesLikeTheEngine(
        self, prefix: list[str], rest: list[str], tail: str, wildcard: str, kind: str
    ) -> None:
        """
        For concrete channels a wildcard token covers exactly what a subscription to
        the same pattern receives (the engine's segment matching); for patterns it
        covers only patterns whose every match it covers.
        """
        tokenName = "/".join(["", "app", kind, *prefix, wildcard])
        wanted = "/".join(["", "app", kind, *rest] + ([tail] if tail else []))
        parsed = parseChannel(wanted, SUBSCRIBE)
        assert parsed is not None
        covered = tokenCovers(tokenName, parsed)
        if not tail:
            self.assertEqual(covered, matches(tokenName, wanted))
        elif covered:
            # Every concrete channel the subscription could receive is covered too.
            for extra in (["x"], ["x", "y"]):
                example = "/".join(["", "app", kind, *rest, *extra])
                if matches(wanted, example):
                    self.assertTrue(matches(tokenName, example), (tokenName, wanted, example))

    @given(name=st.text(alphabet="/ab*~-_$ ", max_size=20))
    def test_neverCrashes(self, name: str) -> None:
        """Any string as a token channel or channel name: an answer, never an exception."""
        parsed = parseChannel("/app/private/" + name.lstrip("/"), SUBSCRIBE)
        if parsed is not None:
            tokenCovers(name, parsed)


class CheckGrantTests(SynchronousTestCase):
    def test_keyMayDoAnything(self) -> None:
        """Key+secret opens every channel of its application (not presence without an id)."""
        self.assertEqual(checkGrant(PUBLISH, channel("/app/private/a", PUBLISH), "K", None), Allowed("K"))
        self.assertEqual(checkGrant(SUBSCRIBE, channel("/app/meta/x"), "K", None), Allowed("K"))
        self.assertEqual(checkGrant(SUBSCRIBE, channel("/app/private/**"), "K", None), Allowed("K"))
        self.assertIs(checkGrant(SUBSCRIBE, channel("/app/presence/x"), "K", None), Refusal.NO_PRESENCE_ID)

    def test_userClaimAndQueries(self) -> None:
        """
        A subscribe token's ``user`` claim (a string or a whole number) is handed on; a query
        needs what a subscribe needs, but no presence.
        """
        c = channel("/app/private/a")
        for named, user in (("u1", "u1"), (7, "7"), (True, None), ("", None), ({"id": 1}, None)):
            claims = {"channel": c.name, "sub": True, "user": named}
            self.assertEqual(checkGrant(SUBSCRIBE, c, "K", claims), Allowed("K", user=user))
        room = channel("/app/presence/room", QUERY)
        self.assertEqual(checkGrant(QUERY, room, "K", None), Allowed("K"))
        self.assertEqual(checkGrant(QUERY, room, "K", {"channel": room.name, "sub": True}), Allowed("K"))
        self.assertIs(
            checkGrant(QUERY, room, "K", {"channel": room.name, "pub": True}), Refusal.TOKEN_NO_SUBSCRIBE
        )

    def test_tokenOrder(self) -> None:
        """Channel mismatch first, then sub, then pub, then presence id."""
        c = channel("/app/presence/room")
        self.assertIs(
            checkGrant(SUBSCRIBE, c, "K", {"channel": "/app/presence/other"}), Refusal.TOKEN_CHANNEL_MISMATCH
        )
        self.assertIs(checkGrant(SUBSCRIBE, c, "K", {"channel": c.name}), Refusal.TOKEN_NO_SUBSCRIBE)
        self.assertIs(checkGrant(SUBSCRIBE, c, "K", {"channel": c.name, "sub": True}), Refusal.NO_PRESENCE_ID)
        p = channel("/app/presence/room", PUBLISH)
        self.assertIs(checkGrant(PUBLISH, p, "K", {"channel": c.name, "sub": True}), Refusal.TOKEN_NO_PUBLISH)

    def test_flagsMustBeTrue(self) -> None:
        """``sub``/``pub`` must be exactly ``true``: ``"true"`` or 1 grant nothing."""
        c = channel("/app/private/a")
        for value in ("true", 1, "yes", None, False):
            self.assertIs(
                checkGrant(SUBSCRIBE, c, "K", {"channel": c.name, "sub": value}), Refusal.TOKEN_NO_SUBSCRIBE
            )

    def test_presence(self) -> None:
        """The presence object comes back from the token; it needs an ``id``."""
        c = channel("/app/presence/room")
        presence = {"id": "user1", "name": "Joe"}
        self.assertEqual(
            checkGrant(SUBSCRIBE, c, "K", {"channel": c.name, "sub": True, "presence": presence}),
            Allowed("K", presence),
        )
        for bad in [None, {}, {"name": "x"}, {"id": ""}, {"id": None}, {"id": True}, "user1", ["id"]]:
            self.assertIs(
                checkGrant(SUBSCRIBE, c, "K", {"channel": c.name, "sub": True, "presence": bad}),
                Refusal.NO_PRESENCE_ID,
                bad,
            )

    def test_subscribeCarriesTokenExpiry(self) -> None:
        """A numeric ``exp`` comes with the subscribe it grants (to end it then), not with publishes."""
        c = channel("/app/private/a")
        claims = {"channel": c.name, "sub": True, "pub": True, "exp": 1_800_000_000}
        self.assertEqual(checkGrant(SUBSCRIBE, c, "K", claims), Allowed("K", expires=1_800_000_000.0))
        self.assertEqual(checkGrant(PUBLISH, channel("/app/private/a", PUBLISH), "K", claims), Allowed("K"))
        self.assertEqual(checkGrant(SUBSCRIBE, c, "K", {**claims, "exp": True}), Allowed("K"))
        self.assertEqual(checkGrant(SUBSCRIBE, c, "K", None), Allowed("K"))

    def test_presenceOnlyOnPresenceChannels(self) -> None:
        """A private subscribe reports no presence even if the token carries one."""
        c = channel("/app/private/a")
        self.assertEqual(
            checkGrant(SUBSCRIBE, c, "K", {"channel": c.name, "sub": True, "presence": {"id": "u"}}),
            Allowed("K"),
        )
