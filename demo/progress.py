"""The live view of the showcase: a table redrawn in place on a terminal, a log otherwise.

Each scenario gets one line: its title, a bar with one cell per node (task nodes and
error callbacks; group joins are bookkeeping and not shown) in the node's state, the
time it has been running, and its nodes counted by state.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TextIO

from django.db.models import Count

from demo.scenario import Run
from django_cloudtasks.constants import NodeKind, State
from django_cloudtasks.models import Node

#: States in the order they fill a bar: finished first, then running, then waiting.
STATES = [
    State.SUCCESS,
    State.FAILURE,
    State.REVOKED,
    State.STARTED,
    State.RETRY,
    State.QUEUED,
    State.SCHEDULED,
    State.PENDING,
]
GLYPHS = {
    State.SUCCESS: "#",
    State.FAILURE: "x",
    State.REVOKED: "-",
    State.STARTED: ">",
    State.RETRY: "r",
    State.QUEUED: ":",
    State.SCHEDULED: "~",
    State.PENDING: ".",
}
#: ANSI colour codes.
COLOURS = {
    State.SUCCESS: "32",
    State.FAILURE: "31",
    State.REVOKED: "35",
    State.STARTED: "33",
    State.RETRY: "33",
    State.QUEUED: "36",
    State.SCHEDULED: "34",
    State.PENDING: "2",
}
BAR_WIDTH = 21  # a chord of 20 and its body, one cell each
TITLE_WIDTH = 30
SPINNER = "-\\|/"

Segment = tuple[str, str]  # text, ANSI colour code ("" for none)


def node_counts(runs: Iterable[Run]) -> dict[str, Counter[str]]:
    """Per scenario title, its nodes counted by state (one query)."""
    owner = {wid: run.title for run in runs for wid in run.workflow_ids}
    counts: dict[str, Counter[str]] = {title: Counter() for title in owner.values()}
    rows = (
        Node.objects.filter(workflow_id__in=list(owner))
        .exclude(kind=NodeKind.BARRIER)
        .order_by()
        .values("workflow_id", "state")
        .annotate(n=Count("pk"))
    )
    for row in rows:
        counts[owner[str(row["workflow_id"])]][row["state"]] += row["n"]
    return counts


def describe(counts: Counter[str], limit: int | None = None) -> str:
    """``"15 success, 4 started, 2 queued"``, without the parts beyond ``limit`` characters."""
    parts = [f"{counts[s]} {s.lower()}" for s in STATES if counts[s]]
    text = ", ".join(parts) or "no nodes yet"
    while limit is not None and len(text) > limit and parts:
        parts.pop()
        text = ", ".join(parts) + ", ..."
    return text


def bar(counts: Counter[str], width: int = BAR_WIDTH) -> list[Segment]:
    """One cell per node (scaled down when there are more nodes than cells)."""
    total = sum(counts.values())
    if total > width:
        cells = {s: round(counts[s] * width / total) for s in STATES}
    else:
        cells = {s: counts[s] for s in STATES}
    segments, left = [], width
    for state in STATES:
        cell_count = min(cells[state], left)
        if cell_count:
            segments.append((GLYPHS[state] * cell_count, COLOURS[state]))
            left -= cell_count
    return [*segments, (" " * left, "")]


class Style:
    """Colours and marks the output stream can show."""

    def __init__(self, stream: TextIO) -> None:
        self.colour = (
            stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        )
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "✓✗".encode(encoding)
            self.ok, self.failed = "✓", "✗"
        except (UnicodeEncodeError, LookupError):
            self.ok, self.failed = "ok", "!!"

    def mark(self, run: Run) -> Segment:
        """The mark in front of a finished scenario."""
        if run.ok:
            return self.ok, COLOURS[State.SUCCESS]
        return self.failed, COLOURS[State.FAILURE]

    def render(self, segments: Sequence[Segment], width: int | None = None) -> str:
        """Join ``segments``, cut to ``width`` visible characters, coloured if possible."""
        out, left = [], width if width is not None else 10**6
        for text, code in segments:
            text = text[: max(0, left)]
            left -= len(text)
            if text:
                out.append(f"\x1b[{code}m{text}\x1b[0m" if self.colour and code else text)
        return "".join(out)

    def legend(self) -> str:
        """What the bar's cells mean."""
        parts: list[Segment] = []
        for state in STATES:
            parts += [(GLYPHS[state], COLOURS[state]), (f" {state.lower()}  ", "")]
        return self.render(parts)


class LiveTable:
    """Redraws one line per scenario in place (for a terminal)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.style = Style(stream)
        self._drawn = 0

    def start(self) -> None:
        """Print the legend and hide the cursor."""
        self.stream.write(f"  {self.style.legend()}\n\x1b[?25l")

    def update(self, runs: Sequence[Run]) -> None:
        """Redraw every line."""
        counts = node_counts(runs)
        width = shutil.get_terminal_size().columns - 1
        spin = SPINNER[int(time.monotonic() * 5) % len(SPINNER)]
        out = [f"\x1b[{self._drawn}F"] if self._drawn else []
        for run in runs:
            mine = counts.get(run.title, Counter())
            mark = self.style.mark(run) if run.done else (spin, "")
            line = [
                mark,
                (f" {run.title[:TITLE_WIDTH]:<{TITLE_WIDTH}} ", ""),
                *bar(mine),
                (f" {run.elapsed:5.1f}s  ", ""),
            ]
            used = sum(len(text) for text, _ in line)
            line.append((describe(mine, width - used), ""))
            out.append(f"\x1b[2K{self.style.render(line, width)}\n")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(runs)

    def close(self) -> None:
        """Show the cursor again."""
        self.stream.write("\x1b[?25h")
        self.stream.flush()


class ChangeLog:
    """Prints a line whenever a scenario's nodes change state (for logs and CI)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.style = Style(stream)
        self._last: dict[str, str] = {}
        self._started = time.monotonic()

    def start(self) -> None:
        """Nothing to prepare."""

    def update(self, runs: Sequence[Run]) -> None:
        """Print the scenarios whose counts changed or that just ended."""
        counts = node_counts(runs)
        now = time.monotonic() - self._started
        for run in runs:
            text = describe(counts.get(run.title, Counter()))
            if run.done:
                text += f" -> {self.style.mark(run)[0]} {'done' if run.ok else 'NOT as expected'}"
            if self._last.get(run.title) != text:
                self._last[run.title] = text
                self.stream.write(f"{now:6.1f}s  {run.title}: {text}\n")
        self.stream.flush()

    def close(self) -> None:
        """Nothing to tidy up."""


def display_for(stream: TextIO) -> LiveTable | ChangeLog:
    """A live table on a terminal, a change log otherwise."""
    if stream.isatty() and os.environ.get("TERM") != "dumb":
        return LiveTable(stream)
    return ChangeLog(stream)
