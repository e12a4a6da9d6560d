"""The channel grammar and wildcard expansion."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pandapush.bayeux import channel

segments = st.text(alphabet="abcAB01-_!~()$@", min_size=1, max_size=4)
names = st.lists(segments, min_size=1, max_size=5).map(lambda s: "/" + "/".join(s))


def referenceMatch(pattern: str, name: str) -> bool:
    """Segment-by-segment matching, written plainly, to check ``expand`` against."""
    p, n = pattern.split("/")[1:], name.split("/")[1:]
    if p[-1] == "**":
        return len(n) > len(p) - 1 and n[: len(p) - 1] == p[:-1]
    if p[-1] == "*":
        return len(n) == len(p) and n[:-1] == p[:-1]
    return p == n


class GrammarTests(SynchronousTestCase):
    def test_names(self) -> None:
        """Names are slash-separated segments of the Bayeux character set, nothing else."""
        for good in ["/a", "/a/b", "/foo-bar/b_z/!~()$@", "/0"]:
            self.assertTrue(channel.isValidName(good), good)
        for bad in ["", "/", "a", "/a/", "//a", "/a b", "/a/*", "/a/**", "/ä", "/a\n"]:
            self.assertFalse(channel.isValidName(bad), bad)

    def test_patterns(self) -> None:
        """A pattern is a name whose last segment only is * or **."""
        for good in ["/*", "/**", "/a/*", "/a/b/**"]:
            self.assertTrue(channel.isValidPattern(good), good)
        for bad in ["/a", "/*/a", "/a/***", "/a*", "/a/*/*", "/**/b"]:
            self.assertFalse(channel.isValidPattern(bad), bad)

    def test_metaAndService(self) -> None:
        """/meta/** and /service/** cannot be subscribed to; lookalikes can."""
        self.assertFalse(channel.isSubscribable("/meta/foo"))
        self.assertFalse(channel.isSubscribable("/service/foo"))
        self.assertTrue(channel.isSubscribable("/metadata"))
        self.assertTrue(channel.isSubscribable("/services/x"))

    @given(st.text(alphabet="/ab*-_!~()$@%. é", max_size=12) | names)
    def test_validityCachedAsComputed(self, name: str) -> None:
        """The remembered answers of isValidName and isValidPattern are the grammar's, asked twice."""
        for _ in range(2):
            self.assertEqual(channel.isValidName(name), channel._NAME.fullmatch(name) is not None)
            self.assertEqual(channel.isValidPattern(name), channel._PATTERN.fullmatch(name) is not None)

    def test_longNamesChecked(self) -> None:
        """Names longer than the cached ones are checked all the same (and not remembered)."""
        long = "/a" * 200
        before = channel._VALID_NAME.cache_info().currsize
        self.assertTrue(channel.isValidName(long))
        self.assertFalse(channel.isValidName(long + "/"))
        self.assertTrue(channel.isValidPattern(long + "/**"))
        self.assertFalse(channel.isValidPattern(long + "/***"))
        self.assertEqual(channel._VALID_NAME.cache_info().currsize, before)

    def test_deepChannelsNotCached(self) -> None:
        """
        Deep channels are expanded but not cached: their expansions grow with the depth
        times the length, and 16,384 of them would sit in memory for good.
        """
        channel._EXPAND_CACHED.cache_clear()
        deep = "/" + "/".join(["a"] * 30)
        self.assertEqual(len(channel.expand(deep)), 32)
        self.assertEqual(channel._EXPAND_CACHED.cache_info().currsize, 0)
        channel.expand("/a/b/c/d/e/f/g/h")
        self.assertEqual(channel._EXPAND_CACHED.cache_info().currsize, 1)
        self.assertEqual(channel.expand("/a/b/c/d/e/f/g/h/i")[-1], "/**")
        self.assertEqual(channel._EXPAND_CACHED.cache_info().currsize, 1)

    def test_expansionLinear(self) -> None:
        """
        An expansion is at most ``MAX_DEPTH + 2`` keys, each no longer than the channel: its
        size is linear in the channel's length. A deeper channel is refused rather than
        expanded (7,000 segments once cost 0.34 s and 45 MB per publish).
        """
        for segments, size in [(1, 1), (3, 40), (channel.MAX_DEPTH, 1), (channel.MAX_DEPTH, 190)]:
            name = "/" + "/".join(["s" * size] * segments)
            keys = channel.expand(name)
            self.assertEqual(len(keys), segments + 2)
            self.assertLessEqual(sum(map(len, keys)), (channel.MAX_DEPTH + 2) * (len(name) + 3))
            self.assertTrue(all(channel.matches(k, name) for k in keys))
        for segments in [channel.MAX_DEPTH + 1, 7000]:
            with self.assertRaises(ValueError):
                channel.expand("/" + "/".join(["a"] * segments))

    def test_expand(self) -> None:
        """/a/b/c is reached through exactly these five subscription keys."""
        self.assertEqual(channel.expand("/a/b/c"), ("/a/b/c", "/a/b/*", "/a/b/**", "/a/**", "/**"))
        self.assertEqual(channel.expand("/a"), ("/a", "/*", "/**"))

    def test_segmentsNotPrefixes(self) -> None:
        """/a/b/** does not match /a/bc, and /* matches one-segment channels only."""
        self.assertFalse(channel.matches("/a/b/**", "/a/bc"))
        self.assertFalse(channel.matches("/a/b/**", "/a/b"))
        self.assertTrue(channel.matches("/*", "/a"))
        self.assertFalse(channel.matches("/*", "/a/b"))

    @given(names, names, st.sampled_from(["", "/*", "/**"]))
    def test_expandAgreesWithReference(self, base: str, name: str, suffix: str) -> None:
        """For any pattern and name, expansion-based matching equals segment matching."""
        pattern = base + suffix
        self.assertEqual(channel.matches(pattern, name), referenceMatch(pattern, name))

    @given(names, st.sampled_from(["/*", "/**"]))
    def test_childrenMatch(self, base: str, suffix: str) -> None:
        """A direct child of a pattern's base is always matched by it."""
        self.assertTrue(channel.matches(base + suffix, base + "/x"))
