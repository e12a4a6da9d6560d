#!/usr/bin/env python3
"""Top functions (self and inclusive) from a py-spy raw (collapsed stacks) profile.

    python3 bench/tools/pyspy-summary.py profile.txt [--top 25]

Samples in the reactor's poll (epoll) count as idle and are reported apart.
"""

import collections
import sys


def main() -> None:
    path = sys.argv[1]
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 25
    selfTime: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = idle = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            n = int(count)
            frames = stack.split(";")
            total += n
            leaf = frames[-1]
            if "doPoll" in stack and ("epoll" in leaf or "doPoll" in leaf or "poll" in leaf.split(" ")[0]):
                idle += n
                continue
            selfTime[leaf] += n
            for frame in set(frames):
                inclusive[frame] += n
    busy = total - idle
    print(
        f"{total} samples, {idle} idle in the reactor's poll ({100 * idle / max(total, 1):.0f}%), {busy} busy"
    )
    print("\nself time (% of busy samples):")
    for frame, n in selfTime.most_common(top):
        print(f"  {100 * n / max(busy, 1):5.1f}%  {frame}")
    print("\ninclusive time (% of busy samples):")
    for frame, n in inclusive.most_common(top + 10):
        print(f"  {100 * n / max(busy, 1):5.1f}%  {frame}")


if __name__ == "__main__":
    main()
