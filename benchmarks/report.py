"""What one benchmark case measured, and the tables the command prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Measurement:
    """One run of one case on one system."""

    case: str
    system: str  # "cloudtasks" or "celery"
    tasks: int
    wall: float
    queries: int | None = None  # in the servers, over all deliveries of the case
    submit_queries: int | None = None  # in the submitting process
    requests: int = 0
    rejected: int = 0  # deliveries answered 409 (retried by the queue)
    worker_peak_mb: float = 0.0  # the largest peak RSS of one server/worker process
    total_peak_mb: float = 0.0  # the sum of the peaks of all the system's processes
    cpu: dict[str, float] = field(default_factory=dict)  # component -> CPU seconds
    request_seconds: float = 0.0  # summed over run requests, inside Django
    db_seconds: float = 0.0  # summed over run requests, inside the database calls

    @property
    def rate(self) -> float:
        """Tasks per second."""
        return self.tasks / self.wall if self.wall > 0 else 0.0

    @property
    def queries_per_task(self) -> float | None:
        """Server queries per task (None when not measured)."""
        return None if self.queries is None else self.queries / max(1, self.tasks)


@dataclass
class RequestLog:
    """Totals of the lines the query counter wrote during one case."""

    requests: int = 0
    rejected: int = 0
    queries: int = 0
    db_seconds: float = 0.0
    request_seconds: float = 0.0


class QueryLogs:
    """Reads the per-process request logs of the bench server from a mark on."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets: dict[Path, int] = {}

    def mark(self) -> None:
        """Remember where every log ends now."""
        self._offsets = {p: p.stat().st_size for p in self.directory.glob("*.tsv")}

    def read(self) -> RequestLog:
        """Totals of the run requests logged since :meth:`mark`."""
        totals = RequestLog()
        for path in self.directory.glob("*.tsv"):
            with path.open("rb") as handle:
                handle.seek(self._offsets.get(path, 0))
                data = handle.read()
            end = data.rfind(b"\n") + 1  # ignore a line still being written
            for line in data[:end].decode().splitlines():
                url, status, queries, db, total = line.split("\t")
                if "/cloudtasks/run/" not in url:
                    continue
                totals.requests += 1
                totals.rejected += status == "409"
                totals.queries += int(queries)
                totals.db_seconds += float(db)
                totals.request_seconds += float(total)
        return totals


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_table(rows: Sequence[Measurement], markdown: bool = False) -> str:
    """The main table: per case and system, time, throughput, queries and memory."""
    ratios = _ratios(rows)
    header = [
        "case",
        "system",
        "tasks",
        "wall s",
        "tasks/s",
        "queries/task",
        "submit queries",
        "409s",
        "worker peak MB",
        "total peak MB",
        "ours/celery",
    ]
    body = []
    for row in rows:
        ratio = ratios.get(row.case) if row.system == "cloudtasks" else None
        body.append(
            [
                row.case,
                row.system,
                f"{row.tasks:,}",
                f"{row.wall:.3f}",
                f"{row.rate:,.0f}",
                _fmt(row.queries_per_task, ".2f"),
                _fmt(row.submit_queries, "d"),
                str(row.rejected) if row.system == "cloudtasks" else "-",
                f"{row.worker_peak_mb:.0f}",
                f"{row.total_peak_mb:.0f}",
                _fmt(ratio, ".2f"),
            ]
        )
    return _table(header, body, markdown)


def cost_table(rows: Sequence[Measurement], markdown: bool = False) -> str:
    """Where the time goes: CPU milliseconds per task by process, and request time.

    ``postgres`` is the backends connected to the benchmark's database; ``server`` the
    gunicorn processes; ``submitter`` this process (building, persisting, sending the
    roots, polling); ``worker`` Celery's pool.
    """
    components = sorted({name for row in rows for name in row.cpu})
    header = ["case", "system", "ms/task (wall)", *(f"cpu ms/task {c}" for c in components)]
    header += ["request ms", "db ms/request"]
    body = []
    for row in rows:
        per = 1000 / max(1, row.tasks)
        line = [row.case, row.system, f"{row.wall * per:.2f}"]
        line += [f"{row.cpu[c] * per:.2f}" if c in row.cpu else "-" for c in components]
        if row.requests:
            line += [
                f"{row.request_seconds / row.requests * 1000:.2f}",
                f"{row.db_seconds / row.requests * 1000:.2f}",
            ]
        else:
            line += ["-", "-"]
        body.append(line)
    return _table(header, body, markdown)


def _ratios(rows: Sequence[Measurement]) -> dict[str, float]:
    ours = {r.case: r for r in rows if r.system == "cloudtasks"}
    theirs = {r.case: r for r in rows if r.system == "celery"}
    return {
        case: ours[case].rate / theirs[case].rate
        for case in ours
        if case in theirs and theirs[case].rate > 0
    }


def _table(header: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body)])
