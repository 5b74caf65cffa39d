"""Summarise py-spy collapsed stacks: ``python -m benchmarks.profile_summary DIR [N]``.

Prints, per kind of process (``worker``, ``emulator``), the functions with the most
samples inclusive of what they call, as a share of the process kind's samples.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def summarise(directory: Path, top: int = 40) -> str:
    """The report for every ``*.txt`` file of ``directory``."""
    kinds: dict[str, tuple[Counter[str], int]] = {}
    for path in sorted(directory.glob("*.txt")):
        kind = path.stem.split("-", 1)[0]
        inclusive, total = kinds.get(kind, (Counter(), 0))
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            samples = int(count)
            total += samples
            frames = {_short(frame) for frame in stack.split(";")}
            for frame in frames:
                inclusive[frame] += samples
        kinds[kind] = (inclusive, total)
    out = []
    for kind, (inclusive, total) in kinds.items():
        out.append(f"== {kind}: {total} samples")
        for frame, samples in inclusive.most_common(top):
            out.append(f"{samples / max(1, total) * 100:6.1f}%  {frame}")
    return "\n".join(out)


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 40))
