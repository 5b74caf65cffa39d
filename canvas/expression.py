"""The base of every canvas value: composition, options, and running."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Self

from canvas import executor
from canvas.errors import GraphFormatError
from canvas.options import merge_options, normalize_option
from canvas.values import check_json

#: The longest name a run may be given (``apply_async(name=...)``).
MAX_RUN_NAME = 200


class Expression:
    """An immutable description of work: a signature, chain, group or chord.

    Subclasses are immutable: every method that "changes" an expression returns a new
    one. Expressions compare by value and hash by their JSON form.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _kinds: ClassVar[dict[str, type[Expression]]] = {}
    kind: ClassVar[str] = ""

    options: Mapping[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Expression._kinds[cls.kind] = cls

    # -- immutability --------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; use .set() or .clone()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _evolve(self, **changes: Any) -> Self:
        new = object.__new__(type(self))
        for name in self._fields:
            object.__setattr__(new, name, changes.get(name, getattr(self, name)))
        return new

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Expression.from_dict, (self.to_dict(),))

    # -- composition ---------------------------------------------------------------

    def __or__(self, other: Expression) -> Expression:
        """Compose this work then ``other`` (see :func:`canvas.composition.pipe`)."""
        raise NotImplementedError

    def set(self, **options: Any) -> Self:
        """Return a copy with ``options`` added (see :data:`canvas.options.OPTION_NAMES`).

        Raises:
            TypeError: for an unknown option or a value that is not JSON data.
        """
        extra = normalize_options(options, self.describe())
        merged = dict(self.options)
        merged.update(extra)
        return self._evolve(options=merged)

    def on_error(self, errback: Expression) -> Self:
        """Return a copy that runs ``errback`` once if this work fails for good."""
        extra = normalize_options({"link_error": [errback]}, self.describe())
        return self._evolve(options=merge_options(self.options, extra))

    def partial(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Self:
        """Return a copy whose first task(s) receive ``args``/``kwargs`` in addition."""
        raise NotImplementedError

    def clone(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Self:
        """Return a copy given ``args``/``kwargs`` as :meth:`partial` does, and ``options``.

        Values are immutable, so a copy is only needed when something changes; Celery
        code that clones before changing keeps working.
        """
        new = self.partial(args, kwargs) if (args or kwargs) else self
        return new.set(**options) if options else new

    # Celery's in-place methods. An immutable value cannot honour them, and returning a
    # changed copy would silently drop the callback of code that ignores the result.

    def link(self, callback: Any) -> None:
        """Not supported: Celery adds a success callback in place.

        Raises:
            AttributeError: always, naming the rewrite (``sig | callback``).
        """
        raise AttributeError(
            f"{self.describe()} is immutable, so .link() cannot add a callback in place; "
            "compose it instead: sig = sig | callback (or chain(sig, callback))"
        )

    def link_error(self, errback: Any) -> None:
        """Not supported: Celery adds an error callback in place.

        Raises:
            AttributeError: always, naming the rewrite (``sig = sig.on_error(errback)``).
        """
        raise AttributeError(
            f"{self.describe()} is immutable, so .link_error() cannot add a callback in "
            "place; use the copy it returns: sig = sig.on_error(errback)"
        )

    def describe(self) -> str:
        """A short human description, used in error messages."""
        raise NotImplementedError

    # -- running -------------------------------------------------------------------

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run this expression through the installed executor.

        ``args``/``kwargs`` are passed to the first task(s) as with :meth:`partial`;
        ``options`` (``countdown``, ``eta``, ``queue``...) apply to the whole run:
        a ``countdown`` delays the whole canvas, not only its first task. ``name``
        names the run (``"resize avatar 42"``); by default it is :meth:`describe`.

        Raises:
            canvas.errors.NoExecutorError: when no executor is installed.
        """
        expression = self.partial(args or (), kwargs) if (args or kwargs) else self
        return executor.current().apply_async(expression, self._run_options(options, "apply_async"))

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Shortcut for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """:meth:`apply_async` for async code: awaits the executor's ``aapply_async``.

        Raises:
            canvas.errors.NoExecutorError: when no executor is installed.
        """
        expression = self.partial(args or (), kwargs) if (args or kwargs) else self
        run_options = self._run_options(options, "aapply_async")
        return await executor.current().aapply_async(expression, run_options)

    def _run_options(self, options: Mapping[str, Any], method: str) -> dict[str, Any]:
        """The normalised run options; ``name`` (the run's name) is only valid here."""
        options = dict(options)
        name = options.pop("name", None)
        run_options = normalize_options(options, f"{method} of {self.describe()}")
        if name is not None:
            if not isinstance(name, str) or not name.strip() or len(name) > MAX_RUN_NAME:
                raise TypeError(
                    f"option 'name' of {method} must be a non-empty string of at most "
                    f"{MAX_RUN_NAME} characters, got {name!r}"
                )
            run_options["name"] = name
        return run_options

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        """Shortcut for ``await aapply_async(args, kwargs)``."""
        return await self.aapply_async(args, kwargs)

    # -- serialisation -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return this expression as plain JSON data (see :meth:`from_dict`)."""
        raise NotImplementedError

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Expression:
        """Rebuild an expression from :meth:`to_dict` output.

        Raises:
            GraphFormatError: when ``data`` names no known kind of expression.
        """
        kind = data.get("type") if isinstance(data, Mapping) else None
        cls = Expression._kinds.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise GraphFormatError(f"not a canvas expression: {data!r}")
        return cls._from_dict(data)

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> Expression:
        raise NotImplementedError


def normalize_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate ``options`` and return them as plain JSON data.

    Datetimes become ISO 8601 strings and error callbacks become their dict form.

    Raises:
        TypeError: for an unknown option or a value of the wrong type.
        ValueError: for a value of the right type that is out of range.
    """
    result: dict[str, Any] = {}
    for name, value in options.items():
        if name == "link_error" and value is not None:
            result[name] = _errbacks(value, f"option {name!r} of {where}")
        elif name == "time_limit":
            result["dispatch_deadline"] = normalize_option(name, value, where)
        else:
            result[name] = normalize_option(name, value, where)
    check_json(result, "options", f" of {where}")
    return result


def _errbacks(value: Any, label: str) -> list[dict[str, Any]]:
    items: Iterable[Any] = value if isinstance(value, list | tuple) else [value]
    result = []
    for item in items:
        if isinstance(item, Expression):
            result.append(item.to_dict())
        elif isinstance(item, Mapping) and "type" in item:
            result.append(Expression.from_dict(item).to_dict())
        else:
            raise TypeError(f"{label} must hold signatures, got {item!r}")
    return result
