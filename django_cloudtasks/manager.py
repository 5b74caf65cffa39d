"""``CloudChainManager``: the original package's builder, kept as a thin facade.

A manager collects steps (tasks, groups, groups of chains) and compiles them to the
same canvas expression one would write with ``chain``/``group``/``|``; ``run()``
persists and enqueues it like any other expression.

Result injection follows the original package: a step placed after another receives
the previous result in the one parameter its payload leaves unset. Parameters without
a default are considered first, so ``f(a, b, c=0)`` with payload ``{"b": 1}`` receives
it in ``a``; only when every required parameter is set does a single unset parameter
with a default receive it. A step whose payload sets everything ignores the previous
result. More than one candidate is an error, raised when the step is added.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from canvas import Expression, Signature, group
from django_cloudtasks.exceptions import NotRegistered
from django_cloudtasks.policy import ERRBACK_PARAMETERS
from django_cloudtasks.registry import Task, registry

if TYPE_CHECKING:
    from django_cloudtasks.results import AsyncResult, GroupResult

#: Keys a member of ``add_group`` may have.
GROUP_ITEM_KEYS = ("endpoint_path", "payload", "delay_seconds", "error_callback")

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True)
class _Call:
    """One task call with its payload, and where it would take a previous result."""

    task_name: str
    payload: Mapping[str, Any]
    delay_seconds: float
    error_callback: str | None
    #: Parameters that could receive the previous result (one, or an ambiguity).
    candidates: tuple[str, ...]
    #: The first positional parameter, which receives a prepended argument.
    first_positional: str | None

    def check_can_follow(self) -> None:
        """Raise ``ValueError`` when it is ambiguous which parameter gets the result."""
        if len(self.candidates) > 1:
            names = ", ".join(repr(name) for name in self.candidates)
            raise ValueError(
                f"task {self.task_name!r} follows another step, so it receives that "
                f"step's result in the one parameter its payload leaves unset; but it "
                f"leaves {names} unset. Set all but one of them in the payload."
            )

    def expression(self, fed: bool, seen: frozenset[int]) -> Signature:
        """The signature; ``fed`` when a previous step hands this one its result."""
        if fed:
            self.check_can_follow()
        options: dict[str, Any] = {}
        if self.delay_seconds:
            options["countdown"] = self.delay_seconds
        receiver = self.candidates[0] if len(self.candidates) == 1 else None
        if receiver is not None and receiver != self.first_positional:
            options["result_kwarg"] = receiver
        sig = Signature(self.task_name, (), self.payload, options, immutable=not self.candidates)
        if self.error_callback:
            sig = sig.on_error(Signature(self.error_callback))
        return sig


@dataclass(frozen=True)
class _Group:
    """Calls that run in parallel; the next step receives the list of their results."""

    calls: tuple[_Call, ...]

    def expression(self, fed: bool, seen: frozenset[int]) -> Expression:
        return group(*(call.expression(fed, seen) for call in self.calls))


@dataclass(frozen=True)
class _ChainGroup:
    """Whole managers that run in parallel (``add_chain_group``)."""

    managers: tuple[CloudChainManager, ...]

    def expression(self, fed: bool, seen: frozenset[int]) -> Expression:
        return group(*(manager._build(fed, seen) for manager in self.managers))


_Step = _Call | _Group | _ChainGroup


class CloudChainManager:
    """Build a workflow step by step, as the original ``django-gcp-cloudtasks`` did.

    ``add_task``, ``add_group`` and ``add_chain_group`` append steps that run one after
    the other; ``add_chain`` attaches a whole other manager that runs once every step
    of this one has finished. ``run()`` starts it all and returns the result handle of
    the last step. Every method that adds something returns the manager, so calls can
    be chained. Sub-managers are referenced, not copied: steps added to them later are
    part of the run.
    """

    def __init__(self) -> None:
        self._steps: list[_Step] = []
        self._followers: list[CloudChainManager] = []

    def __repr__(self) -> str:
        return f"<CloudChainManager: {len(self._steps)} steps, {len(self._followers)} chains after>"

    # -- building ----------------------------------------------------------------------

    def add_task(
        self,
        name: str,
        payload: Mapping[str, Any] | None = None,
        delay_seconds: float = 0,
        error_callback: str | None = None,
    ) -> Self:
        """Append a call of task ``name`` with ``payload`` as its keyword arguments.

        After another step, the previous result goes to the one parameter ``payload``
        leaves unset (see the module docstring). ``delay_seconds`` counts from when the
        step becomes ready. ``error_callback`` names a task run once if this one fails
        for good; it receives whichever of ``original_task_id``, ``original_task_name``,
        ``error`` and ``payload`` it accepts.

        Raises:
            NotRegistered: when ``name`` or ``error_callback`` is not a registered task.
            TypeError: when ``payload`` is not a dict of JSON data that fits the task's
                parameters, or ``delay_seconds`` is not a number.
            ValueError: when ``delay_seconds`` is negative, or the step follows another
                and leaves more than one parameter unset.
        """
        call = _call(name, payload, delay_seconds, error_callback, "add_task")
        if self._steps:
            call.check_can_follow()
        self._steps.append(call)
        return self

    def add_group(
        self, tasks_info: Sequence[Mapping[str, Any]], error_callback: str | None = None
    ) -> Self:
        """Append tasks that run in parallel; the next step receives their results' list.

        Each item is ``{"endpoint_path": name, "payload": {...}, "delay_seconds": n}``
        (``payload``, ``delay_seconds`` and a per-item ``error_callback`` are optional).
        ``error_callback`` applies to every member that has none of its own, and runs
        once per member that fails. After another step, each member receives its result
        by the same rule as ``add_task``.

        Raises:
            TypeError: when ``tasks_info`` is not a list of dicts, or an item is wrong
                as for ``add_task``.
            ValueError: for an empty list, an item without ``endpoint_path`` or with an
                unknown key, or an ambiguous injection.
            NotRegistered: for an unknown task name.
        """
        if isinstance(tasks_info, str | bytes | Mapping) or not isinstance(tasks_info, Sequence):
            raise TypeError(f"add_group takes a list of dicts, got {tasks_info!r}")
        if not tasks_info:
            raise ValueError("add_group needs at least one task")
        calls = []
        for position, item in enumerate(tasks_info):
            where = f"add_group item {position}"
            if not isinstance(item, Mapping):
                raise TypeError(f"{where} must be a dict, got {item!r}")
            unknown = sorted(set(item) - set(GROUP_ITEM_KEYS))
            if unknown:
                known = ", ".join(GROUP_ITEM_KEYS)
                raise ValueError(f"{where} has unknown keys {unknown}; known keys: {known}")
            if "endpoint_path" not in item:
                raise ValueError(f"{where} has no 'endpoint_path' (the task name): {item!r}")
            call = _call(
                item["endpoint_path"],
                item.get("payload"),
                item.get("delay_seconds", 0),
                item.get("error_callback", error_callback),
                where,
            )
            if self._steps:
                call.check_can_follow()
            calls.append(call)
        self._steps.append(_Group(tuple(calls)))
        return self

    def add_chain(self, chain_manager: CloudChainManager) -> Self:
        """Run ``chain_manager`` once every step of this manager has finished.

        Its first step receives this manager's result. The attached chain runs after
        all of this manager's steps, including steps added after this call; several
        attached chains run in parallel, each receiving the result.

        Raises:
            TypeError: when ``chain_manager`` is not a ``CloudChainManager``.
            ValueError: when it is empty, is this manager or contains it, or its first
                step cannot tell which parameter receives the result.
        """
        self._check_member(chain_manager, "add_chain")
        chain_manager._build(True, frozenset({id(self)}))
        self._followers.append(chain_manager)
        return self

    def add_chain_group(self, *chain_managers: CloudChainManager) -> Self:
        """Append managers that run in parallel; the next step receives their results.

        After another step, the first step of each receives that step's result by the
        same rule as ``add_task``.

        Raises:
            TypeError: when an argument is not a ``CloudChainManager``.
            ValueError: when none is given, one is empty, is this manager or contains
                it, or a first step cannot tell which parameter receives the result.
        """
        if not chain_managers:
            raise ValueError("add_chain_group needs at least one CloudChainManager")
        for manager in chain_managers:
            self._check_member(manager, "add_chain_group")
            manager._build(bool(self._steps), frozenset({id(self)}))
        self._steps.append(_ChainGroup(tuple(chain_managers)))
        return self

    def _check_member(self, manager: Any, where: str) -> None:
        if not isinstance(manager, CloudChainManager):
            raise TypeError(f"{where} takes CloudChainManager instances, got {manager!r}")
        if manager is self:
            raise ValueError(f"{where}: a CloudChainManager cannot contain itself")
        if not manager._steps:
            raise ValueError(f"{where}: the CloudChainManager given has no steps")

    # -- compiling and running ---------------------------------------------------------

    def to_expression(self) -> Expression:
        """The canvas expression this manager describes (a signature, chain, group...).

        Raises:
            ValueError: when the manager has no steps, contains itself, or a step
                cannot tell which parameter receives the previous result.
        """
        return self._build(False, frozenset())

    def _build(self, fed: bool, seen: frozenset[int]) -> Expression:
        if id(self) in seen:
            raise ValueError("a CloudChainManager cannot contain itself")
        if not self._steps:
            raise ValueError(
                "the CloudChainManager has nothing to run: add a task, a group or a "
                "chain group first"
            )
        seen = seen | {id(self)}
        parts = [step.expression(fed or i > 0, seen) for i, step in enumerate(self._steps)]
        if self._followers:
            followers = [follower._build(True, seen) for follower in self._followers]
            parts.append(followers[0] if len(followers) == 1 else group(*followers))
        return functools.reduce(operator.or_, parts)

    def run(self) -> AsyncResult | GroupResult:
        """Persist the workflow and enqueue its first steps (after the transaction commits).

        Each call starts a new, independent run. Returns the result handle of the last
        step: a ``GroupResult`` when the workflow ends in a group.

        Raises:
            ValueError: as :meth:`to_expression`.
            TypeError: when a task's arguments cannot bind (e.g. a first step whose
                payload leaves a required parameter unset).
        """
        result: AsyncResult | GroupResult = self.to_expression().apply_async()
        return result


def _call(
    name: Any,
    payload: Any,
    delay_seconds: Any,
    error_callback: Any,
    where: str,
) -> _Call:
    """Validate one task call and work out where it would take a previous result."""
    task = _task(name, where)
    if payload is None:
        payload = {}
    if not isinstance(payload, Mapping):
        raise TypeError(
            f"{where}: the payload of {name!r} must be a dict of keyword arguments, "
            f"got {type(payload).__name__}: {payload!r}"
        )
    payload = dict(payload)
    parameters = task.call_signature()
    try:
        parameters.bind_partial(**payload)
    except TypeError as exc:
        raise TypeError(f"{where}: the payload does not fit {name}{parameters}: {exc}") from None
    if isinstance(delay_seconds, bool) or not isinstance(delay_seconds, int | float):
        raise TypeError(f"{where}: delay_seconds must be a number, got {delay_seconds!r}")
    if delay_seconds < 0:
        raise ValueError(f"{where}: delay_seconds must not be negative, got {delay_seconds!r}")
    if error_callback is not None:
        _check_error_callback(error_callback, where)
    named = [p for p in parameters.parameters.values() if p.kind not in _VARIADIC]
    unset = [p for p in named if p.name not in payload]
    required = [p.name for p in unset if p.default is p.empty]
    positional = [p.name for p in named if p.kind in _POSITIONAL]
    call = _Call(
        task_name=name,
        payload=payload,
        delay_seconds=delay_seconds,
        error_callback=error_callback,
        candidates=tuple(required or (p.name for p in unset)),
        first_positional=positional[0] if positional else None,
    )
    call.expression(False, frozenset())  # payload values must be JSON data
    return call


def _task(name: Any, where: str) -> Task:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{where}: a task name must be a non-empty string, got {name!r}")
    try:
        return registry.get(name)
    except NotRegistered:
        close = difflib.get_close_matches(name, registry.names(), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise NotRegistered(
            f"{where}: no task is registered as {name!r}{hint} (register it with "
            "@register_task or @task in an installed app's tasks module)"
        ) from None


def _check_error_callback(name: Any, where: str) -> None:
    task = _task(name, f"{where} (error_callback)")
    required = [
        p.name
        for p in task.call_signature().parameters.values()
        if p.kind not in _VARIADIC and p.default is p.empty and p.name not in ERRBACK_PARAMETERS
    ]
    if required:
        raise TypeError(
            f"{where}: error callback {name!r} requires {', '.join(map(repr, required))}, "
            f"but an error callback only receives {', '.join(ERRBACK_PARAMETERS)}"
        )
