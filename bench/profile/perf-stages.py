#!/usr/bin/env python3
"""CPU samples by stage, from `perf script` output of a `perf record --call-graph=dwarf` run.

    perf script -i perf.data > perf.txt
    bench/profile/perf-stages.py stages PATTERN... < perf.txt   # each sample to the first pattern
                                                                # matching a frame, from the root
    bench/profile/perf-stages.py under FUNCTION [DEPTH] < perf.txt   # what FUNCTION's samples
                                                                     # are spent in, DEPTH frames down

Patterns are Python regular expressions; shares are of all samples in the file.
"""
import collections
import re
import sys


def samples(lines):
    """Yields each sample's frames, leaf first."""
    stack = []
    for line in lines:
        if not line.strip():
            if stack:
                yield stack
            stack = []
        elif line.startswith((" ", "\t")):
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                stack.append(re.sub(r"\+0x[0-9a-f]+$", "", re.sub(r" \(.*\)$", "", parts[1]).strip()))
    if stack:
        yield stack


def stages(patterns, lines):
    counts, total = collections.Counter(), 0
    for stack in samples(lines):
        total += 1
        stage = next((p for frame in reversed(stack) for p in patterns if re.search(p, frame)), "(other)")
        counts[stage] += 1
    for stage, n in counts.most_common():
        print(f"{100 * n / total:5.1f}%  {stage}")


def under(function, depth, lines):
    counts, total, hits = collections.Counter(), 0, 0
    for stack in samples(lines):
        total += 1
        for i, frame in enumerate(stack):
            if function in frame:
                hits += 1
                counts[" <- ".join(reversed(stack[max(0, i - depth):i])) or "(self)"] += 1
                break
    print(f"samples {total}, under '{function}': {hits} ({100 * hits / max(total, 1):.1f}%)")
    for callee, n in counts.most_common(25):
        print(f"{100 * n / max(total, 1):5.1f}%  {callee[:200]}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "stages":
        stages(sys.argv[2:], sys.stdin)
    elif len(sys.argv) in (3, 4) and sys.argv[1] == "under":
        under(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 1, sys.stdin)
    else:
        sys.exit(__doc__)
