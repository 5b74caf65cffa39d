"""Services the benchmark starts (emulator, gunicorn, a Celery worker) and their memory.

Each service runs in a session of its own, so stopping it signals its whole process
group (a gunicorn master and its workers, a Celery worker and its pool) by id, and
nothing the benchmark did not start.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """A command run in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, list(argv), dict(env), log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        """Start the command; return self."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """The id of the process started (the group leader)."""
        assert self.process is not None, f"{self.name} is not started"
        return self.process.pid

    def check(self) -> None:
        """Raise RuntimeError, with the log's tail, when the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        """The end of the log."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_for_port(self, port: int, timeout: float = 60.0) -> None:
        """Block until ``127.0.0.1:port`` accepts connections.

        Raises:
            RuntimeError: when the process exits or ``timeout`` passes first.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {port}:\n{self.tail()}")

    def processes(self) -> list[int]:
        """The ids of the process and all its descendants."""
        return [self.pid, *descendants(self.pid)] if self.process else []

    def stop(self, timeout: float = 10.0, first: int = signal.SIGTERM) -> None:
        """Signal the process group (``first``), then SIGKILL it after ``timeout``."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        # Children that outlive the leader (pool processes) are in the group too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self.process = None


def descendants(pid: int) -> list[int]:
    """Ids of every process below ``pid`` (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak(pids: Sequence[int]) -> None:
    """Reset the processes' VmHWM to their current RSS (``clear_refs`` 5, Linux 4.0+)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """User + system CPU seconds each process has used so far (missing ones left out)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two :func:`cpu_seconds` readings.

    A process that started in between counts from zero; one that ended is lost.
    """
    return sum(max(0.0, used - before.get(pid, 0.0)) for pid, used in after.items())


def processes_named(name: str, argument: str | None = None) -> list[int]:
    """Ids of the processes whose command name is ``name`` (to read their CPU time).

    With ``argument``, only those whose command line has it as a word (a PostgreSQL
    backend shows its database name there).
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() != name:
                continue
            words = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue
        if argument is None or argument.encode() in words:
            found.append(int(entry))
    return found


def current_rss_mb() -> float:
    """This process's resident set size now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine() -> str:
    """One line describing this machine and its load."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU ({model}){memory}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; load average {load}"
    )
