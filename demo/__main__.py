"""Entry point of ``make demo``; see the README."""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "The live demo (emulator + real HTTP server + SQLite) arrives with the Cloud Tasks\n"
        "transport. Meanwhile, this runs a canvas compiled and executed in-process:"
    )
    from canvas import Signature, compile, group

    expr = group(Signature("add", (i, i)) for i in range(5)) | Signature("tsum")
    graph = compile(expr)
    print(f"  {expr!r}\n  -> {len(graph)} nodes, {len(graph.edges())} edges")
    return 0


if __name__ == "__main__":
    sys.exit(main())
