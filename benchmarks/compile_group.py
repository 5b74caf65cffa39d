"""Print how long compiling a group grows with its size (it should grow linearly).

Run with ``make bench`` or ``python benchmarks/compile_group.py``; not part of the tests.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canvas import Signature, compile, group


def measure(size: int, repeat: int = 3) -> float:
    expr = group(Signature("t", (i,), immutable=True) for i in range(size)) | Signature("sum")
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        compile(expr)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    print(f"{'members':>9} {'seconds':>9} {'us/member':>10}")
    for size in (1_000, 10_000, 100_000):
        seconds = measure(size)
        print(f"{size:>9,} {seconds:>9.4f} {seconds / size * 1e6:>10.2f}")


if __name__ == "__main__":
    main()
