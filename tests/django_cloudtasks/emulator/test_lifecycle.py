"""Starting, stopping, the command line, and importing without Django."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from django_cloudtasks.emulator import CloudTasksEmulator, emulator_client
from tests.django_cloudtasks.emulator.recording import LOCATION

REPO = Path(__file__).resolve().parents[3]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def test_the_emulator_imports_without_django():
    code = (
        "import sys, django_cloudtasks.emulator as e; "
        "e.CloudTasksEmulator; assert 'django' not in sys.modules, 'django imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), timeout=30)


def test_stop_is_idempotent_and_wait_returns_once_stopped():
    emulator = CloudTasksEmulator().start()
    assert re.fullmatch(r"127\.0\.0\.1:\d+", emulator.address)
    assert not emulator.wait(timeout=0.01)
    emulator.stop()
    emulator.stop()
    assert emulator.wait(timeout=0)


def test_a_bound_port_cannot_be_bound_twice():
    with CloudTasksEmulator() as first, pytest.raises(OSError):
        CloudTasksEmulator(port=first.port).start()


def test_the_command_line_serves_until_sigterm_and_exits_cleanly():
    queue = f"{LOCATION}/queues/from-cli"
    process = subprocess.Popen(
        [sys.executable, "-m", "django_cloudtasks.emulator", "--port", "0", "--queue", queue],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        assert match, line
        assert process.stdout.readline().startswith("OIDC certificates at http://127.0.0.1:")
        assert process.stdout.readline().startswith(
            "At most 10 deliveries in flight over all queues (--max-in-flight"
        )
        tasks_client = emulator_client(match.group(1))
        try:
            assert tasks_client.get_queue(name=queue).name == queue
        finally:
            tasks_client.transport.close()

        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "stopped" in out


def test_the_command_line_refuses_a_malformed_queue_name():
    result = subprocess.run(
        [sys.executable, "-m", "django_cloudtasks.emulator", "--port", "0", "--queue", "nope"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
    )
    assert result.returncode == 2
    assert "queues/QUEUE" in result.stderr


def test_the_command_line_options_reach_the_emulator():
    from django_cloudtasks.emulator.cli import build_parser
    from django_cloudtasks.emulator.options import EmulatorOptions

    arguments = [
        "--time-scale=60",
        "--max-in-flight=0",
        "--auto-create-queues",
        "--tombstone-seconds=5",
        "--queue-tombstone-seconds=1",
        "--dispatch-deadline-cap=0.5",
        "--subsecond-backoffs",
    ]
    options = EmulatorOptions.from_arguments(build_parser().parse_args(arguments))

    assert options.scheduler_time_scale == 60
    assert options.max_in_flight is None  # 0 lifts the cap
    assert options.auto_create_queues and options.subsecond_backoffs
    assert (options.tombstone_seconds, options.queue_tombstone_seconds) == (5, 1)
    assert options.dispatch_deadline_cap == 0.5
    with CloudTasksEmulator(options=options, port=0) as emulator:
        assert emulator.scheduler.clock.time_scale == 60
    plain = EmulatorOptions.from_arguments(build_parser().parse_args([]))
    assert (plain.scheduler_time_scale, plain.max_in_flight, plain.auto_create_queues) == (
        1,
        10,
        False,
    )
