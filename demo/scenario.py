"""How a showcase item is written and run: a generator that submits, waits, then checks.

A scenario is a generator function taking its :class:`Run`. It submits workflows
(``run.watch(result)`` puts them in the live table), yields a :class:`Wait` whenever it
needs time to pass or work to finish, checks the outcome with :func:`expect`, and
returns the line that describes its result. The runner drives every scenario at once
from one thread, resuming each when what it waits for has happened; so they all run
concurrently while the table is redrawn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from django_cloudtasks.emulator import AttemptRecord
from django_cloudtasks.emulator.scheduler import Execution
from django_cloudtasks.models import Node, Workflow

Steps = Generator["Wait", None, str]


class Unexpected(Exception):
    """A scenario did not end as expected; the message says how."""


def expect(condition: bool, message: str) -> None:
    """Raise :class:`Unexpected` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise Unexpected(message)


@dataclass(frozen=True)
class Wait:
    """What a scenario waits for: ``done()`` becoming true within ``timeout`` seconds."""

    what: str
    done: Callable[[], bool]
    timeout: float = 30.0


@dataclass(frozen=True)
class Scenario:
    """One item of the showcase: a title, the code it runs, and its steps."""

    title: str
    code: str
    steps: Callable[[Run], Steps]


def scenario(title: str, code: str) -> Callable[[Callable[[Run], Steps]], Scenario]:
    """Decorate a generator function as a :class:`Scenario`."""

    def decorate(steps: Callable[[Run], Steps]) -> Scenario:
        return Scenario(title, code, steps)

    return decorate


@dataclass
class Run:
    """A scenario in progress: the workflows it watches and how it ended.

    ``history`` returns the emulator's delivery attempts, the independent witness of
    what Cloud Tasks actually delivered; ``scheduler_history`` the calls its Cloud
    Scheduler made.
    """

    scenario: Scenario
    history: Callable[[], list[AttemptRecord]]
    scheduler_history: Callable[[], list[Execution]] = list
    workflow_ids: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    ok: bool | None = None
    outcome: str = ""
    _steps: Steps | None = None
    _wait: Wait | None = None
    _wait_started: float = 0.0

    @property
    def title(self) -> str:
        """The scenario's title."""
        return self.scenario.title

    @property
    def done(self) -> bool:
        """True once the scenario has ended, as expected or not."""
        return self.ok is not None

    @property
    def elapsed(self) -> float:
        """Seconds since the scenario started, until it ended."""
        return (self.finished_at or time.monotonic()) - self.started_at

    # -- used by scenarios ----------------------------------------------------------------

    def watch(self, result: Any) -> Any:
        """Show ``result``'s workflow in the live table; return ``result``."""
        self.workflow_ids.append(str(result.workflow_id))
        return result

    def settled(self) -> Wait:
        """Wait until every watched workflow and each of its nodes is final, and the
        emulator has recorded the answer to each delivery.

        A failed workflow is final before its error callbacks have run, and a node is
        final before the server has answered its delivery; this waits for both.
        """

        def done() -> bool:
            workflows = Workflow.objects.filter(pk__in=self.workflow_ids)
            nodes = Node.objects.filter(workflow_id__in=self.workflow_ids)
            if workflows.unfinished().exists() or nodes.unfinished().exists():
                return False
            answered = [r.task_id for r in self.history() if r.succeeded]
            # A node run inline has no Cloud Task: its origin's answer covers it.
            delivered = nodes.filter(started_at__isnull=False, inline_origin__isnull=True)
            started = delivered.values_list("pk", flat=True)
            return all(any(str(pk) in task_id for task_id in answered) for pk in started)

        return Wait("its workflows to finish", done)

    def after(self, seconds: float) -> Wait:
        """Wait until ``seconds`` after the scenario started."""
        moment = self.started_at + seconds
        return Wait(f"{seconds:g}s to pass", lambda: time.monotonic() >= moment)

    def deliveries(self, node: Node) -> list[AttemptRecord]:
        """The emulator's HTTP attempts to deliver ``node`` (any answer)."""
        node_id = str(node.pk)
        return [record for record in self.history() if node_id in record.task_id]

    # -- used by the runner ---------------------------------------------------------------

    def start(self) -> None:
        """Run the scenario up to its first wait (it submits its workflows)."""
        self.started_at = time.monotonic()
        self._steps = self.scenario.steps(self)
        self._resume()

    def poll(self) -> None:
        """Resume the scenario if what it waits for happened; fail it on timeout."""
        if self.done or self._wait is None:
            return
        try:
            ready = self._wait.done()
        except Exception as exc:
            self._end(False, f"{type(exc).__name__} while waiting for {self._wait.what}: {exc}")
            return
        if ready:
            self._resume()
        elif time.monotonic() - self._wait_started > self._wait.timeout:
            wait = self._wait
            self._end(False, f"timed out after {wait.timeout:g}s waiting for {wait.what}")

    def abandon(self, reason: str) -> None:
        """End the scenario as not expected (the showcase ran out of time)."""
        if not self.done:
            self._end(False, reason)

    def _resume(self) -> None:
        assert self._steps is not None
        try:
            self._wait = next(self._steps)
            self._wait_started = time.monotonic()
        except StopIteration as stop:
            self._end(True, str(stop.value))
        except Unexpected as exc:
            self._end(False, str(exc))
        except Exception as exc:
            self._end(False, f"{type(exc).__name__}: {exc}")

    def _end(self, ok: bool, outcome: str) -> None:
        self.ok, self.outcome = ok, outcome
        self.finished_at = time.monotonic()
        self._wait = None
        if self._steps is not None:
            self._steps.close()
