"""
The unmaskers give what autobahn's masker gives, in one piece or many: with websockets'
C ``apply_mask`` (a dependency, so installed here) and by the paths without it.
"""

from __future__ import annotations

import random

import autobahn.websocket.protocol
from autobahn.websocket import USES_NVX
from autobahn.websocket.xormasker import create_xor_masker
from twisted.trial.unittest import SkipTest, SynchronousTestCase

import pandapush.transports.websocket  # noqa: F401 (installs the masker)
from pandapush.transports import xormask
from pandapush.transports.xormask import DIRECT_FRAME, SMALL_FRAME, SmallFrameMasker, createMasker, unmask


class SmallFrameMaskerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.random = random.Random(17)

    def bytes(self, size: int) -> bytes:
        return bytes(self.random.getrandbits(8) for _ in range(size))

    def test_sameAsAutobahn(self) -> None:
        """Every size up to the threshold, with random masks, unmasks as autobahn does."""
        for size in range(SMALL_FRAME):
            mask, data = self.bytes(4), self.bytes(size)
            self.assertEqual(
                SmallFrameMasker(mask).process(data), create_xor_masker(mask, size).process(data), size
            )

    def test_pieces(self) -> None:
        """A frame read in pieces (any split) continues the mask where the last piece ended."""
        for _ in range(300):
            size = self.random.randrange(1, SMALL_FRAME)
            mask, data = self.bytes(4), self.bytes(size)
            expected = create_xor_masker(mask, size).process(data)
            masker = SmallFrameMasker(mask)
            cuts = sorted(self.random.sample(range(size + 1), min(size + 1, 4)))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
            self.assertEqual(b"".join(masker.process(piece) for piece in pieces), expected)
            self.assertEqual(masker.pointer(), size)
            masker.reset()
            self.assertEqual(masker.pointer(), 0)
            self.assertEqual(masker.process(data), expected)

    def test_leadingZeros(self) -> None:
        """Zero bytes at either end survive the trip through an integer."""
        mask = b"\x00\x00\x00\x00"
        data = b"\x00\x00abc\x00\x00"
        self.assertEqual(SmallFrameMasker(mask).process(data), data)
        self.assertEqual(SmallFrameMasker(b"\x01\x02\x03\x04").process(b""), b"")

    def test_largeFrames(self) -> None:
        """
        From the threshold on (and without a length), autobahn's masker is used, or ours
        when websockets' C XOR does the work; the bytes are autobahn's either way.
        """
        mask = self.bytes(4)
        ours = xormask._speedup is not None
        self.assertIsInstance(createMasker(mask, SMALL_FRAME - 1), SmallFrameMasker)
        self.assertEqual(isinstance(createMasker(mask, SMALL_FRAME), SmallFrameMasker), ours)
        self.assertEqual(isinstance(createMasker(mask), SmallFrameMasker), ours)
        data = self.bytes(5000)
        expected = create_xor_masker(mask, 5000).process(data)
        self.assertEqual(createMasker(mask, 5000).process(data), expected)
        masker = createMasker(mask)
        self.assertEqual(masker.process(data[:1001]) + masker.process(data[1001:]), expected)

    def test_installed(self) -> None:
        """The websocket transport has autobahn's protocol use it."""
        self.assertIs(autobahn.websocket.protocol.create_xor_masker, createMasker)

    def test_speedupsInUse(self) -> None:
        """websockets' compiled apply_mask is what XORs here, not its pure-Python fallback."""
        from websockets import speedups

        self.assertIs(xormask._speedup, speedups.apply_mask)
        self.assertTrue(speedups.__file__.endswith(".so"), speedups.__file__)


class SmallFrameMaskerWithoutSpeedupsTests(SmallFrameMaskerTests):
    """The same without websockets' C code: the integer XOR, and autobahn's from the threshold on."""

    def setUp(self) -> None:
        super().setUp()
        self.patch(xormask, "_speedup", None)

    def test_speedupsInUse(self) -> None:
        """Not here."""
        self.assertIsNone(xormask._speedup)


class UnmaskTests(SynchronousTestCase):
    """unmask, for a whole payload, gives autobahn's result by every path it takes."""

    def setUp(self) -> None:
        self.random = random.Random(6455)

    def check(self) -> None:
        for size in [*range(0, 2 * DIRECT_FRAME + 9), SMALL_FRAME - 1, SMALL_FRAME, 1000, 70000]:
            mask = self.random.randbytes(4)
            data = self.random.randbytes(size)
            unmasked = unmask(data, mask)
            self.assertIs(type(unmasked), bytes)
            self.assertEqual(unmasked, create_xor_masker(mask, size).process(data), size)
        self.assertEqual(unmask(b"\x00\x00abc" * 40, b"\x00" * 4), b"\x00\x00abc" * 40)

    def test_sameAsAutobahn(self) -> None:
        """Every size around the thresholds, with random masks."""
        self.check()

    def test_applyMask(self) -> None:
        """With websockets' C code (as installed here), it unmasks every size, in one call."""
        applyMask = xormask._speedup
        self.assertIsNotNone(applyMask)
        calls = []

        def counting(data: bytes, mask: bytes) -> bytes:
            calls.append(len(data))
            return applyMask(data, mask)  # type: ignore[no-any-return]

        self.patch(xormask, "_speedup", counting)
        self.check()
        self.assertEqual(
            sorted(set(calls)),
            sorted({*range(0, 2 * DIRECT_FRAME + 9), SMALL_FRAME - 1, SMALL_FRAME, 1000, 70000, 200}),
        )

    def test_direct(self) -> None:
        """Without websockets' C code, autobahn's C code (as installed here) is called directly."""
        self.patch(xormask, "_speedup", None)
        if not USES_NVX:
            raise SkipTest("autobahn without its C code")
        self.assertIsNotNone(xormask._direct)
        calls = []
        fromBuffer, new, process, free = xormask._direct  # type: ignore[misc]

        def counting(masker: object, buffer: object, size: int) -> None:
            calls.append(size)
            process(masker, buffer, size)

        self.patch(xormask, "_direct", (fromBuffer, new, counting, free))
        self.check()
        self.assertIn(DIRECT_FRAME, calls)
        self.assertNotIn(DIRECT_FRAME - 1, calls)

    def test_withoutDirect(self) -> None:
        """Without either C code, the integer XOR and autobahn's masker give the same."""
        self.patch(xormask, "_speedup", None)
        self.patch(xormask, "_direct", None)
        self.check()
