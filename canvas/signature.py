"""``Signature``: one task call, described as an immutable value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from canvas import executor
from canvas.composition import chain, chord, group, pipe
from canvas.expression import Expression, normalize_options
from canvas.values import check_json, to_json_data


class Signature(Expression):
    """A call of the task ``task_name`` with ``args``, ``kwargs`` and ``options``.

    A mutable signature placed after another piece of work receives that work's
    result as its first positional argument; an ``immutable`` one (``task.si()``)
    ignores it.

    Raises:
        TypeError: when the task name is not a non-empty string, or an argument or
            option is not JSON data (the message names the offending value).
    """

    __slots__ = ("args", "immutable", "kwargs", "options", "task_name")
    _fields: ClassVar[tuple[str, ...]] = ("task_name", "args", "kwargs", "options", "immutable")
    kind: ClassVar[str] = "signature"

    task_name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    immutable: bool

    def __init__(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
    ) -> None:
        if not isinstance(task_name, str) or not task_name:
            raise TypeError(f"a task name must be a non-empty string, got {task_name!r}")
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise TypeError(f"args of {task_name!r} must be a list or tuple, got {args!r}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs of {task_name!r} must be a dict, got {kwargs!r}")
        where = f"{task_name!r}"
        for i, arg in enumerate(args):
            check_json(arg, f"args[{i}]", f" of {where}")
        kwargs = dict(kwargs or {})
        for key, value in kwargs.items():
            if not isinstance(key, str):
                raise TypeError(f"keyword names of {where} must be strings, got {key!r}")
            check_json(value, f"kwargs[{key!r}]", f" of {where}")
        object.__setattr__(self, "task_name", task_name)
        object.__setattr__(self, "args", tuple(to_json_data(list(args))))
        object.__setattr__(self, "kwargs", to_json_data(kwargs))
        object.__setattr__(self, "options", normalize_options(options or {}, where))
        object.__setattr__(self, "immutable", bool(immutable))

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args]
        parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        call = "si" if self.immutable else "s"
        extra = f".set({self.options!r})" if self.options else ""
        return f"{self.task_name}.{call}({', '.join(parts)}){extra}"

    def __or__(self, other: Expression) -> Expression:
        """``self | other``, by the rules of :func:`canvas.composition.pipe`."""
        return pipe(self, other)

    def describe(self) -> str:
        """The task name, quoted."""
        return repr(self.task_name)

    def clone(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """Return a copy with ``args`` prepended, ``kwargs`` merged and ``options`` set.

        As in Celery, an immutable signature ignores ``args`` and ``kwargs``.
        """
        new = self
        if (args or kwargs) and not self.immutable:
            new = Signature(
                self.task_name,
                (*args, *self.args),
                {**self.kwargs, **(kwargs or {})},
                self.options,
                self.immutable,
            )
        return new.set(**options) if options else new

    def partial(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Signature:
        """Same as :meth:`clone` with no options."""
        return self.clone(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task's function here and now, as Celery does (nothing is queued).

        ``args`` are prepended and ``kwargs`` merged, unless the signature is immutable.

        Raises:
            canvas.errors.NoExecutorError: when no executor is installed to find the
                function by its task name.
        """
        return executor.current().call(self.clone(args, kwargs))

    def apply(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run the task here and now and return an eager result (Celery's ``sig.apply()``).

        Nothing is stored or sent; the signature's error callbacks run in process if the
        task raises. ``args``/``kwargs`` are added as with :meth:`clone`.

        Raises:
            canvas.errors.NoExecutorError: when no executor is installed.
        """
        return executor.current().apply(self.clone(args, kwargs), options)

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "signature", "task", "args", "kwargs", "options", "immutable"}``."""
        return {
            "type": self.kind,
            "task": self.task_name,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "options": dict(self.options),
            "immutable": self.immutable,
        }

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            data["task"],
            data.get("args", ()),
            data.get("kwargs") or {},
            data.get("options") or {},
            data.get("immutable", False),
        )


def signature(
    varies: str | Expression | Mapping[str, Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    immutable: bool = False,
    **options: Any,
) -> Expression:
    """Build an expression as Celery's ``signature()`` does.

    ``varies`` is a task name (a :class:`Signature` is built from it and the other
    arguments), an expression (returned, with ``args``/``kwargs``/``options`` applied as
    :meth:`~canvas.expression.Expression.clone` does), or a dict: the form
    :meth:`~canvas.expression.Expression.to_dict` gives, or Celery's own dict form of a
    signature, chain, group or chord (``{"task": ..., "subtask_type": ...}``).

    Raises:
        TypeError: for anything else, or a dict in neither form.
    """
    if isinstance(varies, Expression):
        return varies.clone(args, kwargs, **options)
    if isinstance(varies, Mapping):
        return from_celery_dict(varies).clone(args, kwargs, **options)
    return Signature(varies, args, kwargs, options, immutable)


def from_celery_dict(data: Mapping[str, Any]) -> Expression:
    """Rebuild an expression from its dict form, ours or Celery's.

    Raises:
        TypeError: when ``data`` is neither.
    """
    if "type" in data:
        return Expression.from_dict(data)
    if "task" not in data:
        raise TypeError(
            f"not a signature dict (no 'task' or 'type' key): {dict(data)!r}; pass a task "
            "name, an expression, or the dict form of one"
        )
    kind = data.get("subtask_type")
    options = dict(data.get("options") or {})
    inner = data.get("kwargs") or {}
    if kind == "chain":
        return chain(*(from_celery_dict(t) for t in inner.get("tasks", ())), options=options)
    if kind == "group":
        return group([from_celery_dict(t) for t in inner.get("tasks", ())], options=options)
    if kind == "chord":
        header: Any = inner.get("header") or ()
        members = header.get("kwargs", {}).get("tasks", ()) if "task" in header else header
        body = inner.get("body")
        return chord(
            [from_celery_dict(t) for t in members],
            None if body is None else from_celery_dict(body),
            options,
        )
    if kind is not None:
        raise TypeError(f"unsupported Celery signature type {kind!r} in {dict(data)!r}")
    return Signature(
        data["task"], data.get("args") or (), inner, options, bool(data.get("immutable"))
    )
