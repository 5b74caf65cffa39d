"""A web server killed in the middle of a task: the task is retried and the workflow completes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from django_cloudtasks.models import Node
from tests.testapp.models import Execution
from tests.testapp.tasks import identity, slow

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 4  # seconds, the slow task's dispatch deadline


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``manage.py runserver`` in a process of its own, serving the test database."""

    def __init__(self, port: int, overrides: dict[str, object], log: Path) -> None:
        self.port, self.overrides, self.log = port, overrides, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "CLOUDTASKS_TEST_SERVER": "1",
            "CLOUDTASKS_TEST_OVERRIDES": json.dumps(self.overrides),
            "DJANGO_SETTINGS_MODULE": "tests.settings",
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "django",
                    "runserver",
                    f"127.0.0.1:{self.port}",
                    "--noreload",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the server did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextmanager
def served(serve_emulator, tmp_path, max_attempts, max_backoff, **extra):
    """The emulator, a queue that retries quickly, and a runserver that can be killed.

    Cloud Tasks' shortest dispatch deadline is 15 s: the emulator's testing option
    times attempts out after the 4 s the tests give their slow task instead.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    emu = serve_emulator(
        base_url=base_url,
        retry={
            "max_attempts": max_attempts,
            "min_backoff": timedelta(seconds=0.5),
            "max_backoff": timedelta(seconds=max_backoff),
        },
        options={"dispatch_deadline_cap": DEADLINE},
        settings_changes=extra,
    )
    overrides = {
        "TRANSPORT": "cloudtasks",
        "EMULATOR_HOST": emu.address,
        "BASE_URL": base_url,
        **extra,
    }
    server = Server(port, overrides, tmp_path / "server.log")
    try:
        server.start()
        yield emu, server
    finally:
        server.stop()


def wait_until_started(task: str) -> None:
    deadline = time.monotonic() + 30
    while not Execution.objects.filter(task=task).exists():
        assert time.monotonic() < deadline, f"{task} never started"
        time.sleep(0.05)


def test_a_server_killed_mid_task_is_recovered_after_the_deadline(serve_emulator, tmp_path):
    with served(serve_emulator, tmp_path, max_attempts=50, max_backoff=2) as (emu, server):
        result = (
            slow.si(2, "survived").set(dispatch_deadline=DEADLINE) | identity.s()
        ).apply_async()
        wait_until_started("slow")
        server.kill()
        server.start()
        assert result.get(timeout=90) == "survived"
        first = Node.objects.get(task_name="slow")
        assert first.attempts == 2
        assert Execution.objects.filter(task="slow").count() == 2
        assert Execution.objects.filter(task="identity").count() == 1
        emu.wait_until_idle(timeout=30)
        answers = [r.status_code for r in emu.history if "/run/slow/" in r.url]
        assert answers[0] is None  # the connection died with the server
        assert answers[-1] == 200


def test_a_server_killed_mid_inline_run_is_taken_over_by_the_first_nodes_redelivery(
    serve_emulator, tmp_path
):
    with served(serve_emulator, tmp_path, max_attempts=100, max_backoff=1, INLINE_SECONDS=30) as (
        emu,
        server,
    ):
        slow_step = slow.si(2, "survived").set(dispatch_deadline=DEADLINE)
        expr = identity.si("go") | slow_step | identity.s()
        result = expr.apply_async()
        wait_until_started("slow")
        server.kill()
        server.start()
        assert result.get(timeout=90) == "survived"
        assert Node.objects.get(task_name="slow").attempts == 2
        assert Execution.objects.filter(task="slow").count() == 2
        assert list(Execution.objects.filter(task="identity").values_list("value", flat=True)) == [
            "go",
            "survived",
        ]
        emu.wait_until_idle(timeout=30)
        # every step ran in the first node's requests: no other node had a Cloud Task
        assert all("/run/identity/" in r.url for r in emu.history)
        answers = [r.status_code for r in emu.history]
        assert answers[0] is None  # the connection died with the server
        assert 409 in answers  # redeliveries waited for the inline run's lease
        assert answers[-1] == 200
