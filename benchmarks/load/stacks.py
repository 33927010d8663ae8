"""Summarise a py-spy profile of the service: the share of samples in each function, inclusive and self.

Not a test. Input: py-spy's collapsed stacks (``--format raw``: one ``frame;frame;... count`` line per
stack), e.g. of the server under ``benchmarks/service_load.py``'s load:

    py-spy record --pid PID --rate 250 --duration 8 --gil --format raw --output profile.raw
    .venv/bin/python -m benchmarks.load.stacks profile.raw --top 40 > profile.txt

With ``--gil`` py-spy samples only the thread holding the GIL, so the shares are of the Python work (time in
onnxruntime, Pillow's decoders and the kernel, which release the GIL, is not in them). A function counts
once per sample however often it appears in the stack; line numbers are dropped.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE_NUMBER = re.compile(r":\d+\)")


def summarise(lines: list[str]) -> tuple[int, Counter[str], Counter[str]]:
    """(total samples, inclusive samples per function, self samples per function) of collapsed stacks."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_LINE_NUMBER.sub(")", f) for f in stack.split(";")]
        if frames[0].startswith(("thread ", "process ")):  # recorded with --threads / --subprocesses
            frames = frames[1:]
        for name in set(frames):
            inclusive[name] += count
        if frames:
            own[frames[-1]] += count
    return total, inclusive, own


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path, help="py-spy --format raw output")
    parser.add_argument("--top", type=int, default=40, help="functions listed per table")
    args = parser.parse_args(argv)
    total, inclusive, own = summarise(args.profile.read_text().splitlines())
    print(f"{total} samples")
    for title, counts in (("inclusive", inclusive), ("self", own)):
        print(f"\n{title}:")
        for name, count in counts.most_common(args.top):
            print(f"{100 * count / max(total, 1):5.1f}%  {name}")


if __name__ == "__main__":
    main()
