"""``manage.py cloudtasks_emulator``: the local Cloud Tasks emulator, until SIGINT or SIGTERM.

It takes the options of ``python -m django_cloudtasks.emulator`` (``--host``, ``--port``,
``--queue``...) through the emulator's options API
(:func:`django_cloudtasks.emulator.options.add_arguments` and
:class:`~django_cloudtasks.emulator.options.EmulatorOptions`) and runs it with
:func:`django_cloudtasks.emulator.cli.run`. This is the one module of the package that
imports the emulator.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_cloudtasks.conf import conf
from django_cloudtasks.emulator import cli
from django_cloudtasks.emulator.options import DEFAULT_PORT, EmulatorOptions, add_arguments


def configured_port() -> int:
    """The port of ``CLOUDTASKS['EMULATOR_HOST']`` (``host:port``), else 8123."""
    host = str(conf.EMULATOR_HOST or "")
    _, _, port = host.rpartition(":")
    return int(port) if port.isdigit() else DEFAULT_PORT


class Command(BaseCommand):
    """Run the Cloud Tasks v2 emulator in the foreground."""

    help = (
        "Start the local Cloud Tasks emulator (the Cloud Tasks v2 gRPC API, HTTP delivery "
        "with retries and rate limits, OIDC tokens) and run it until SIGINT or SIGTERM. "
        "The first line printed is 'Cloud Tasks emulator listening on HOST:PORT'; point the "
        "app at it with CLOUDTASKS['EMULATOR_HOST'] = 'HOST:PORT'. Use -v 2 to log every "
        "delivery attempt."
    )
    requires_system_checks: list[str] = []  # the emulator does not use the app's settings

    def add_arguments(self, parser: CommandParser) -> None:
        """The emulator's options; ``--port`` defaults to the configured emulator port."""
        add_arguments(
            parser,
            port_help="gRPC port, 0 picks a free one (default: the port of "
            f"CLOUDTASKS['EMULATOR_HOST'], else {DEFAULT_PORT})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the emulator; return when it stops.

        Raises:
            CommandError: when it cannot start (the port is taken, a bad queue name).
        """
        if options.get("port") is None:
            options["port"] = configured_port()
        emulator_options = dataclasses.replace(
            EmulatorOptions.from_arguments(options), verbose=options["verbosity"] >= 2
        )
        status = cli.run(emulator_options)
        if status:
            raise CommandError("the emulator stopped with an error", returncode=status)
