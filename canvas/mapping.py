"""Celery's map primitives: ``xmap``, ``xstarmap`` and ``chunks``.

``xmap(task, items)`` is one task that calls ``task`` on each item in turn, in one
process, and returns the list of results; ``xstarmap`` unpacks each item as the
positional arguments. ``chunks(task, items, n)`` splits ``items`` into parts of ``n``
and runs one ``xstarmap`` per part in parallel, as a group: its result is a list of
lists. The built-in tasks that run the maps are named :data:`MAP_TASK` and
:data:`STARMAP_TASK`; the package that runs canvases registers them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

from canvas.composition import group
from canvas.signature import Signature

MAP_TASK = "cloudtasks.map"
STARMAP_TASK = "cloudtasks.starmap"

_group = group


def xmap(task: Signature, items: Iterable[Any]) -> Signature:
    """One task that returns ``[task(item) for item in items]``, run in one process.

    Raises:
        TypeError: when ``task`` is not a signature or ``items`` is not JSON data.
    """
    return _map(MAP_TASK, task, items)


def xstarmap(task: Signature, items: Iterable[Any]) -> Signature:
    """One task that returns ``[task(*item) for item in items]``, run in one process.

    Raises:
        TypeError: when ``task`` is not a signature or ``items`` is not JSON data.
    """
    return _map(STARMAP_TASK, task, items)


def _map(name: str, task: Signature, items: Iterable[Any]) -> Signature:
    if not isinstance(task, Signature):
        raise TypeError(f"a map runs one task signature, got {task!r}")
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
        raise TypeError(f"a map needs an iterable of items, got {items!r}")
    return Signature(name, kwargs={"task": task.to_dict(), "it": list(items)}, immutable=True)


class chunks(group):
    """``items`` split into parts of ``n``, each part one ``xstarmap`` of ``task``.

    It is a group of those parts (stored and compiled as one), so it runs, composes
    and gives results as a group does; :meth:`group` returns the plain group, as in
    Celery.

    Raises:
        TypeError: when ``task`` is not a signature or ``items`` is not iterable.
        ValueError: when ``n`` is not a positive int.
    """

    kind = ""  # registered under no kind of its own: it is stored as a group

    def __init__(
        self,
        task: Signature,
        items: Iterable[Any],
        n: int,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"chunks needs a positive int size, got {n!r}")
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
            raise TypeError(f"chunks needs an iterable of argument tuples, got {items!r}")
        iterator = iter(items)
        parts = []
        while part := list(islice(iterator, n)):
            parts.append(xstarmap(task, part))
        super().__init__(parts, options=options)

    def group(self) -> _group:
        """The plain group of parts, to change or compose as any group."""
        return _group(self.tasks, options=self.options)

    def to_dict(self) -> dict[str, Any]:
        """The dict form of :meth:`group`."""
        return self.group().to_dict()
