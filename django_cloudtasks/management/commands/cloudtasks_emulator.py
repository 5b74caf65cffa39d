"""``manage.py cloudtasks_emulator``: the local Cloud Tasks emulator, until SIGINT or SIGTERM.

It takes the options of ``python -m django_cloudtasks.emulator`` (``--host``, ``--port``,
``--queue``...) and hands them to :func:`django_cloudtasks.emulator.cli.main`.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_cloudtasks.conf import conf
from django_cloudtasks.emulator import cli

#: Emulator options the command does not copy: Django has its own ``-h`` and ``-v``.
_NOT_COPIED = {"help", "verbose"}
_DEFAULT_PORT = 8123


def emulator_actions() -> list[argparse.Action]:
    """The emulator CLI's options, less ``--help`` and ``--verbose`` (``-v 2`` here)."""
    return [a for a in cli.build_parser()._actions if a.dest not in _NOT_COPIED]


def emulator_argv(actions: list[argparse.Action], options: dict[str, Any]) -> list[str]:
    """The emulator command line that gives ``options`` (parsed by ``actions``)."""
    argv: list[str] = []
    for action in actions:
        value, flag = options.get(action.dest), action.option_strings[-1]
        if isinstance(action, argparse._StoreConstAction):
            if value != action.default:
                argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value or ():
                argv += [flag, str(item)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def configured_port() -> int:
    """The port of ``CLOUDTASKS['EMULATOR_HOST']`` (``host:port``), else 8123."""
    host = str(conf.EMULATOR_HOST or "")
    _, _, port = host.rpartition(":")
    return int(port) if port.isdigit() else _DEFAULT_PORT


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
        """The emulator CLI's options; ``--port`` defaults to the configured emulator port."""
        for action in emulator_actions():
            if action.dest == "port":
                action.default = None
                action.help = (
                    "gRPC port, 0 picks a free one (default: the port of "
                    f"CLOUDTASKS['EMULATOR_HOST'], else {_DEFAULT_PORT})"
                )
            parser._add_action(action)

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the emulator; return when it stops.

        Raises:
            CommandError: when it cannot start (the port is taken, a bad queue name).
        """
        if options.get("port") is None:
            options["port"] = configured_port()
        argv = emulator_argv(emulator_actions(), options)
        if options["verbosity"] >= 2:
            argv.append("--verbose")
        status = cli.main(argv)
        if status:
            raise CommandError("the emulator stopped with an error", returncode=status)
