"""The services the showcase needs: a SQLite database, the emulator and a real HTTP server.

:class:`Services` is a context manager. Entering it starts the Cloud Tasks emulator
in this process, configures Django (through the environment variables that
``demo.settings`` reads), migrates a fresh SQLite database, and starts
``manage.py runserver`` on loopback in a child process; leaving it stops both, even
after an error.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from django_cloudtasks.emulator import CloudTasksEmulator

#: The directory holding the ``demo`` package, where the server runs from.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ADMIN_USER = ADMIN_PASSWORD = "demo"
#: The emulator's Cloud Scheduler clock runs this many times faster: a minute lasts 2 s.
SCHEDULER_TIME_SCALE = 30
#: Opens URLs on loopback directly, whatever proxy the environment names.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServiceError(RuntimeError):
    """A service did not start; the message says what to look at."""


class Services:
    """The emulator, the Django server and the database of one demo run."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.directory = Path(tempfile.mkdtemp(prefix="cloudtasks-demo-"))
        self.token = secrets.token_urlsafe(24)
        self.emulator = CloudTasksEmulator(
            host=host, port=0, scheduler_time_scale=SCHEDULER_TIME_SCALE
        )
        self.server: subprocess.Popen[bytes] | None = None
        self._started: set[str] = set()

    @property
    def base_url(self) -> str:
        """The Django server's URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def server_log(self) -> Path:
        """Where the server's output and logs go."""
        return self.directory / "server.log"

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Services:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the emulator, set up Django and the database, start the server.

        Raises:
            ServiceError: when the port is taken or the server does not answer within
                30 seconds.
        """
        _check_port_free(self.host, self.port)
        self.emulator.start()
        self._started.add("emulator")
        os.environ.update(
            DEMO_DIR=str(self.directory),
            DEMO_BASE_URL=self.base_url,
            DEMO_EMULATOR_HOST=self.emulator.address,
            DEMO_AUTH_TOKEN=self.token,
            DEMO_LOG_FILE=str(self.directory / "showcase.log"),
            DJANGO_SETTINGS_MODULE="demo.settings",
        )
        _setup_django()
        self._started.add("django")
        _create_queue()
        self.server = self._start_server()
        self._wait_for_server(timeout=30)

    @property
    def server_running(self) -> bool:
        """True while the server's process is alive."""
        return self.server is not None and self.server.poll() is None

    def stop(self) -> None:
        """Stop the server and the emulator, and close the Cloud Tasks client. Idempotent."""
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        if "django" in self._started:
            from django_cloudtasks.transports import reset_transport

            reset_transport()
        if "emulator" in self._started:
            self.emulator.stop()

    def remove_files(self) -> None:
        """Delete the database and the logs."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def server_log_tail(self, lines: int = 25) -> str:
        """The end of the server's log, to explain a failure."""
        try:
            text = self.server_log.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- the server ----------------------------------------------------------------------

    def _start_server(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, DEMO_LOG_FILE=str(self.server_log), PYTHONUNBUFFERED="1")
        paths = [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
        command = [
            sys.executable,
            "-m",
            "django",
            "runserver",
            f"{self.host}:{self.port}",
            "--noreload",
            "--settings=demo.settings",
        ]
        with self.server_log.open("ab") as log:
            # A session of its own: Ctrl-C reaches only the demo, which stops the server.
            return subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_for_server(self, timeout: float) -> None:
        assert self.server is not None
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}/admin/login/"
        while True:
            if self.server.poll() is not None:
                raise ServiceError(
                    f"the Django server exited with code {self.server.returncode}:\n"
                    f"{self.server_log_tail()}"
                )
            try:
                with LOOPBACK.open(url, timeout=2) as response:
                    if response.status == 200 and self.server.poll() is None:
                        return
            except OSError:  # not listening yet, or another server's error page
                pass
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"the Django server did not answer on {url} within {timeout:g}s:\n"
                    f"{self.server_log_tail()}"
                )
            time.sleep(0.1)


def _setup_django() -> None:
    """Configure Django, migrate the new database and create the admin user."""
    import logging

    import django
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    django.setup()
    logging.captureWarnings(True)
    call_command("migrate", verbosity=0, interactive=False)
    get_user_model().objects.create_superuser(ADMIN_USER, "demo@example.com", ADMIN_PASSWORD)


def _create_queue() -> None:
    """Create the queues of ``CLOUDTASKS['QUEUES']`` on the emulator, as in production.

    The emulator, like Cloud Tasks, answers NOT_FOUND for tasks on a queue nobody
    created.
    """
    from django.core.management import call_command

    call_command("cloudtasks_queues", stdout=io.StringIO())


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as runserver does
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServiceError(f"cannot use {host}:{port} for the Django server: {exc}") from None


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
