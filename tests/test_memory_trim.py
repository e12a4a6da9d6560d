"""``--trim-interval``: the C allocator's free memory handed back to the system (``MemoryTrim``)."""

from __future__ import annotations

import sys

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pandapush.workers.collector import TRIM_INTERVAL, MemoryTrim, mallocTrim
from tests.support.inprocess import InProcessServer


def rssKiB() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class MemoryTrimTests(SynchronousTestCase):
    def test_everyInterval(self) -> None:
        """A trim when the service starts, then one per interval, none once stopped."""
        clock = Clock()
        calls: list[int] = []

        def trim(pad: int) -> int:
            calls.append(pad)
            return 1

        service = MemoryTrim(60, clock, trim)
        service.startService()
        self.assertEqual(calls, [0])
        clock.advance(59)
        self.assertEqual(calls, [0])
        clock.advance(1)
        clock.advance(60)
        self.assertEqual(calls, [0, 0, 0])
        service.stopService()
        clock.advance(600)
        self.assertEqual(len(calls), 3)

    def test_withoutMallocTrim(self) -> None:
        """Where the C library has no malloc_trim the service runs and does nothing."""
        clock = Clock()
        service = MemoryTrim(1, clock, None)
        service._trim = None
        service.startService()
        clock.advance(5)
        service.stopService()

    def test_freedMemoryHandedBack(self) -> None:
        """
        The real thing, on glibc: memory freed in the middle of the heap (what a burst of
        request bodies leaves) stays in the process until malloc_trim hands it back.
        """
        if not sys.platform.startswith("linux"):
            raise self.skipTest("glibc's malloc_trim is Linux's")
        trim = mallocTrim()
        self.assertIsNotNone(trim, "glibc has malloc_trim")
        assert trim is not None
        trim(0)
        # 40,000 objects of 2 KiB (under glibc's mmap threshold: from the heap), all freed
        # but the last, which keeps the heap's top where it is.
        chunks = [bytearray(2048) for _ in range(40_000)]
        for chunk in chunks:
            chunk[::512] = b"x" * 4  # touch every page
        last = chunks.pop()
        high = rssKiB()
        del chunks
        held = rssKiB()
        trim(0)
        after = rssKiB()
        self.assertGreater(high - after, 40_000, (high, held, after))
        self.assertGreater(held - after, 40_000, (high, held, after))
        del last


class OptionTests(TestCase):
    async def test_default(self) -> None:
        server = await InProcessServer.started(self)
        trims = [s for s in server.service if isinstance(s, MemoryTrim)]
        self.assertEqual([(t.step, t.running) for t in trims], [(TRIM_INTERVAL, True)])

    async def test_interval(self) -> None:
        server = await InProcessServer.started(self, "--trim-interval", "5")
        self.assertEqual([s.step for s in server.service if isinstance(s, MemoryTrim)], [5.0])

    async def test_off(self) -> None:
        server = await InProcessServer.started(self, "--trim-interval", "0")
        self.assertEqual([s for s in server.service if isinstance(s, MemoryTrim)], [])
