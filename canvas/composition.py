"""``chain``, ``group`` and ``chord``, and the rules of the ``|`` operator.

Results flow as in Celery: a chain passes each result to the next member; every
member of a group receives the same input and the group's result is the list of its
members' results, in member order; a chord runs its body on that list.

The rules of ``|``:

* ``a | b`` with neither a group nor a chord on the left is a flat chain;
* ``group | x`` is ``chord(group, x)`` (and ``group | group()`` is the group itself);
* ``chord(h, b) | x`` is ``chord(h, b | x)``.

Groups unroll as Celery's do: a group nested directly in a group contributes its
members (``group(a, group(b, c))`` gives ``[ra, rb, rc]``), and between other members
of a chain a group of one runs as its single member while an empty group is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from canvas.expression import Expression, normalize_options


def _members(items: tuple[Any, ...], what: str) -> tuple[Expression, ...]:
    """Accept ``f(a, b)`` and ``f([a, b])`` / ``f(generator)`` alike."""
    if len(items) == 1 and not isinstance(items[0], Expression):
        if isinstance(items[0], str | bytes | Mapping) or not isinstance(items[0], Iterable):
            raise TypeError(f"{what} takes expressions, got {items[0]!r}")
        items = tuple(items[0])
    for item in items:
        if not isinstance(item, Expression):
            raise TypeError(f"{what} takes signatures, chains, groups or chords, got {item!r}")
    return items


class chain(Expression):
    """Members run one after the other, each receiving the previous result.

    Nested chains without options of their own are flattened. The result of a chain
    is the result of its last member.

    Raises:
        TypeError: for members that are not expressions.
        ValueError: for an empty chain.
    """

    __slots__ = ("options", "tasks")
    _fields: ClassVar[tuple[str, ...]] = ("tasks", "options")
    kind: ClassVar[str] = "chain"
    tasks: tuple[Expression, ...]

    def __init__(self, *tasks: Any, options: Mapping[str, Any] | None = None) -> None:
        members = _members(tasks, "chain()")
        if not members:
            raise ValueError("a chain needs at least one member")
        flat: list[Expression] = []
        for member in members:
            if isinstance(member, chain) and not member.options:
                flat.extend(member.tasks)
            else:
                flat.append(member)
        object.__setattr__(self, "tasks", tuple(flat))
        object.__setattr__(self, "options", normalize_options(options or {}, "a chain"))

    def __repr__(self) -> str:
        return " | ".join(_paren(t) for t in self.tasks)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Apply the chain, as Celery's ``chain(...)()`` does: ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def __or__(self, other: Expression) -> Expression:
        """``self | other``, by the rules of :func:`pipe`."""
        return pipe(self, other)

    def describe(self) -> str:
        """``"a chain starting with <first member>"``."""
        return f"a chain starting with {self.tasks[0].describe()}"

    def partial(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> chain:
        """Apply ``args``/``kwargs`` to the first member."""
        first = self.tasks[0].partial(args, kwargs)
        return self._evolve(tasks=(first, *self.tasks[1:]))

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "chain", "tasks": [...], "options": {...}}``."""
        return {
            "type": self.kind,
            "tasks": [t.to_dict() for t in self.tasks],
            "options": dict(self.options),
        }

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> chain:
        tasks = [Expression.from_dict(t) for t in data.get("tasks", ())]
        return cls(*tasks, options=data.get("options"))


class group(Expression):
    """Members run in parallel on the same input; the result is their results' list.

    ``group()`` with no members is allowed and gives ``[]``. A member that is itself a
    group is unrolled into this one, as in Celery: ``group(a, group(b, c))`` gives
    ``[ra, rb, rc]``. (A chain that ends in a group still contributes that group's list
    as one element.)
    """

    __slots__ = ("options", "tasks")
    _fields: ClassVar[tuple[str, ...]] = ("tasks", "options")
    kind: ClassVar[str] = "group"
    tasks: tuple[Expression, ...]

    def __init__(self, *tasks: Any, options: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "tasks", _members(tasks, "group()"))
        object.__setattr__(self, "options", normalize_options(options or {}, "a group"))

    def __repr__(self) -> str:
        return f"group({', '.join(repr(t) for t in self.tasks)})"

    def __len__(self) -> int:
        return len(self.tasks)

    def __call__(self, *args: Any, **options: Any) -> Any:
        """Apply the group with ``args`` given to every member, as Celery's ``group()()``."""
        return self.apply_async(args, **options)

    def skew(self, start: float = 1.0, stop: float | None = None, step: float = 1.0) -> group:
        """Return a copy whose members start ``start``, ``start + step``... seconds apart.

        Member ``i`` gets ``countdown = start + i * step``, capped at ``stop`` when given
        (later members then all wait ``stop``), as Celery's ``group.skew()`` does.
        """
        members = []
        for i, member in enumerate(self.tasks):
            countdown = start + i * step
            if stop is not None:
                countdown = min(countdown, stop)
            members.append(member.set(countdown=countdown))
        return self._evolve(tasks=tuple(members))

    def __or__(self, other: Expression) -> Expression:
        """``self | other``, by the rules of :func:`pipe`."""
        return pipe(self, other)

    def describe(self) -> str:
        """``"a group of N"``."""
        return f"a group of {len(self.tasks)}"

    def partial(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> group:
        """Apply ``args``/``kwargs`` to every member."""
        return self._evolve(tasks=tuple(t.partial(args, kwargs) for t in self.tasks))

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "group", "tasks": [...], "options": {...}}``."""
        return {
            "type": self.kind,
            "tasks": [t.to_dict() for t in self.tasks],
            "options": dict(self.options),
        }

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> group:
        tasks = [Expression.from_dict(t) for t in data.get("tasks", ())]
        return cls(tasks, options=data.get("options"))


class chord(Expression):
    """Run ``header`` (a group) and then ``body`` on the list of its results.

    ``header`` may be a group or any iterable of expressions; an empty header gives
    the body ``[]``. The result of a chord is the result of its body.

    As in Celery, the body may be given later: ``chord(header)(body)`` applies the
    chord. A chord without a body cannot be run until one is given.
    """

    __slots__ = ("body", "header", "options")
    _fields: ClassVar[tuple[str, ...]] = ("header", "body", "options")
    kind: ClassVar[str] = "chord"
    header: group
    body: Expression | None

    def __init__(
        self,
        header: Any,
        body: Expression | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(header, group):
            header = group(header)
        if body is not None and not isinstance(body, Expression):
            raise TypeError(f"the body of a chord must be an expression, got {body!r}")
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "options", normalize_options(options or {}, "a chord"))

    def __repr__(self) -> str:
        if self.body is None:
            return f"chord({self.header!r})"
        return f"chord({self.header!r}, {self.body!r})"

    def __call__(self, body: Expression | None = None, **options: Any) -> Any:
        """Apply the chord, with ``body`` as its body when given (Celery's ``chord(h)(b)``).

        Raises:
            TypeError: when ``body`` is not an expression.
            canvas.errors.CanvasError: when the chord has no body.
        """
        target = self if body is None else chord(self.header, body, self.options)
        return target.apply_async(**options)

    def __or__(self, other: Expression) -> Expression:
        """``self | other``, by the rules of :func:`pipe`."""
        return pipe(self, other)

    def describe(self) -> str:
        """``"a chord of N into <body>"``."""
        if self.body is None:
            return f"a chord of {len(self.header)} without a body"
        return f"a chord of {len(self.header)} into {self.body.describe()}"

    def partial(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> chord:
        """Apply ``args``/``kwargs`` to every member of the header."""
        return self._evolve(header=self.header.partial(args, kwargs))

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "chord", "header": {...}, "body": {...}, "options": {...}}``."""
        return {
            "type": self.kind,
            "header": self.header.to_dict(),
            "body": None if self.body is None else self.body.to_dict(),
            "options": dict(self.options),
        }

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> chord:
        header = Expression.from_dict(data["header"])
        body = data.get("body")
        return cls(
            header, None if body is None else Expression.from_dict(body), data.get("options")
        )


def pipe(left: Expression, right: Expression) -> Expression:
    """The ``|`` operator: compose ``left`` then ``right`` (see the module docstring).

    Raises:
        TypeError: when either side is not an expression.
    """
    if not isinstance(left, Expression) or not isinstance(right, Expression):
        return NotImplemented  # type: ignore[no-any-return]
    if isinstance(left, group):
        if isinstance(right, group) and not right.tasks and not right.options:
            return left
        return chord(left, right)
    if isinstance(left, chord):
        if left.body is None:
            return chord(left.header, right, left.options)
        if not left.options:
            return chord(left.header, pipe(left.body, right))
    return chain(left, right)


def _paren(expression: Expression) -> str:
    text = repr(expression)
    return f"({text})" if isinstance(expression, chain) else text
