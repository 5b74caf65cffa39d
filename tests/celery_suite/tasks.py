"""The tasks of Celery's integration suite (``t/integration/tasks.py``), ported.

Each keeps its Celery name under the ``celery_suite.`` prefix. Where Celery's task
talks to Redis (``redis_echo``, ``redis_count``) this one records an
:class:`~tests.testapp.models.Execution` row under the Redis key instead; where it
links a success callback (``link``, which immutable signatures do not support) it
composes the callback with ``|`` and passes the result through.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from django_cloudtasks import chain, chord, group, signature, task
from django_cloudtasks.exceptions import SoftTimeLimitExceeded
from tests.testapp.models import Execution


class ExpectedException(Exception):
    """Celery's sentinel exception: equal to another with the same arguments."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExpectedException) and self.args == other.args

    def __hash__(self) -> int:
        return hash(self.args)


def _record(key: str, value: object = None) -> None:
    Execution.objects.create(task=key, value=value)


@task(name="celery_suite.identity")
def identity(x):
    """Return the argument."""
    return x


@task(name="celery_suite.add")
def add(x, y, z=None):
    """Add two or three numbers."""
    if z:
        return x + y + z
    return x + y


@task(name="celery_suite.mul")
def mul(x: int, y: int) -> int:
    """Multiply two numbers."""
    return x * y


@task(name="celery_suite.write_to_file_and_return_int")
def write_to_file_and_return_int(file_name, i):
    with open(file_name, mode="a", buffering=1) as file_handle:
        file_handle.write(str(i) + "\n")
    return i


@task(name="celery_suite.raise_error")
def raise_error(*args):
    """Deliberately raise an error."""
    raise ValueError("deliberate error")


@task(name="celery_suite.chain_add")
def chain_add(x, y):
    (add.s(x, x) | add.s(y)).apply_async()


@task(name="celery_suite.chord_add")
def chord_add(x, y):
    chord(add.s(x, x), add.s(y)).apply_async()


@task(name="celery_suite.delayed_sum")
def delayed_sum(numbers, pause_time=1):
    """Sum the numbers after a pause."""
    time.sleep(pause_time)
    return sum(numbers)


@task(name="celery_suite.delayed_sum_with_soft_guard")
def delayed_sum_with_soft_guard(numbers, pause_time=1):
    """Sum the numbers after a pause, or 0 when the soft time limit interrupts it."""
    try:
        time.sleep(pause_time)
        return sum(numbers)
    except SoftTimeLimitExceeded:
        return 0


@task(name="celery_suite.tsum")
def tsum(nums):
    """Sum an iterable of numbers."""
    return sum(nums)


@task(name="celery_suite.xsum")
def xsum(nums):
    """Sum of ints and lists."""
    return sum(sum(num) if isinstance(num, Iterable) else num for num in nums)


@task(name="celery_suite.add_replaced", bind=True)
def add_replaced(self, x, y):
    """Add two numbers (via the add task)."""
    raise self.replace(add.s(x, y))


@task(name="celery_suite.echo_through")
def echo_through(value, message, key="redis-echo"):
    """Record ``message`` and pass ``value`` on: a success callback, composed with ``|``."""
    _record(key, message)
    return value


@task(name="celery_suite.replace_with_chain", bind=True)
def replace_with_chain(self, *args, link_msg=None):
    c = chain(identity.s(*args), identity.s())
    if link_msg is not None:
        c = c | echo_through.s(link_msg)
    return self.replace(c)


@task(name="celery_suite.replace_with_chain_which_raises", bind=True)
def replace_with_chain_which_raises(self, *args, link_msg=None):
    c = chain(identity.s(*args), raise_error.s())
    if link_msg is not None:
        c = c.on_error(redis_echo.si(link_msg))
    return self.replace(c)


@task(name="celery_suite.replace_with_empty_chain", bind=True)
def replace_with_empty_chain(self, *_):
    return self.replace(chain())


@task(name="celery_suite.add_to_all", bind=True)
def add_to_all(self, nums, val):
    """Add the given value to all supplied numbers."""
    subtasks = [add.s(num, val) for num in nums]
    raise self.replace(group(*subtasks))


@task(name="celery_suite.print_unicode")
def print_unicode(log_message="håå®ƒ valmuefrø", print_message="hiöäüß"):
    """Print a string containing funny characters."""
    print(print_message)


@task(name="celery_suite.return_exception")
def return_exception(e):
    """Return the error callback's argument and a sentinel."""
    return [e, True]


@task(name="celery_suite.ids", bind=True)
def ids(self, i):
    """``[root_id, parent_id, i]``."""
    return [self.request.root_id, self.request.parent_id, i]


@task(name="celery_suite.collect_ids", bind=True)
def collect_ids(self, res, i):
    """``[previous_result, [root_id, parent_id, i]]``."""
    return [res, [self.request.root_id, self.request.parent_id, i]]


@task(name="celery_suite.redis_echo")
def redis_echo(message, redis_key="redis-echo"):
    """Record the message under the key (Celery appends it to a Redis list)."""
    _record(redis_key, message)


@task(name="celery_suite.redis_echo_group_id", bind=True)
def redis_echo_group_id(self, _, redis_key="redis-group-ids"):
    _record(redis_key, self.request.group)


@task(name="celery_suite.redis_count")
def redis_count(redis_key="redis-count"):
    """Count one under the key (Celery increments a Redis key)."""
    _record(redis_key)


@task(name="celery_suite.second_order_replace1", bind=True)
def second_order_replace1(self, state=False):
    if not state:
        _record("redis-echo", "In A")
        new_task = chain(second_order_replace2.s(), second_order_replace1.si(state=True))
        raise self.replace(new_task)
    _record("redis-echo", "Out A")


@task(name="celery_suite.second_order_replace2", bind=True)
def second_order_replace2(self, state=False):
    if not state:
        _record("redis-echo", "In B")
        new_task = chain(redis_echo.s("In/Out C"), second_order_replace2.si(state=True))
        raise self.replace(new_task)
    _record("redis-echo", "Out B")


@task(name="celery_suite.fail")
def fail(*args):
    """Raise ExpectedException."""
    args = ("Task expected to fail", *args)
    raise ExpectedException(*args)


@task(name="celery_suite.fail_replaced", bind=True)
def fail_replaced(self, *args):
    """Replace this task with one which raises ExpectedException."""
    raise self.replace(fail.si(*args))


@task(name="celery_suite.retry_once", bind=True, max_retries=1)
def retry_once(self, *args, max_retries=1, countdown=0.1):
    """Fail once and retry; return the number of retries."""
    if self.request.retries:
        return self.request.retries
    raise self.retry(countdown=countdown, max_retries=max_retries)


@task(name="celery_suite.return_nested_signature_chain_chain")
def return_nested_signature_chain_chain():
    return chain(chain([add.s()])).to_dict()


@task(name="celery_suite.return_nested_signature_chain_group")
def return_nested_signature_chain_group():
    return chain(group([add.s()])).to_dict()


@task(name="celery_suite.return_nested_signature_chain_chord")
def return_nested_signature_chain_chord():
    return chain(chord([add.s()], add.s())).to_dict()


@task(name="celery_suite.return_nested_signature_group_chain")
def return_nested_signature_group_chain():
    return group(chain([add.s()])).to_dict()


@task(name="celery_suite.return_nested_signature_group_group")
def return_nested_signature_group_group():
    return group(group([add.s()])).to_dict()


@task(name="celery_suite.return_nested_signature_group_chord")
def return_nested_signature_group_chord():
    return group(chord([add.s()], add.s())).to_dict()


@task(name="celery_suite.return_nested_signature_chord_chain")
def return_nested_signature_chord_chain():
    return chord(chain([add.s()]), add.s()).to_dict()


@task(name="celery_suite.return_nested_signature_chord_group")
def return_nested_signature_chord_group():
    return chord(group([add.s()]), add.s()).to_dict()


@task(name="celery_suite.return_nested_signature_chord_chord")
def return_nested_signature_chord_chord():
    return chord(chord([add.s()], add.s()), add.s()).to_dict()


@task(name="celery_suite.rebuild_signature")
def rebuild_signature(sig_dict):
    """Rebuild a canvas from its JSON form and check every part is a canvas value."""
    from canvas import Expression, Signature

    def _recurse(sig):
        if not isinstance(sig, Expression):
            raise TypeError(f"{sig!r} is not a signature object")
        if isinstance(sig, chain | group):
            for member in sig.tasks:
                _recurse(member)
        elif isinstance(sig, chord):
            _recurse(sig.header)
            _recurse(sig.body)
        else:
            assert isinstance(sig, Signature)

    _recurse(signature(sig_dict))


@task(name="celery_suite.errback_old_style")
def errback_old_style(request_id):
    redis_count(request_id)
    return request_id


@task(name="celery_suite.errback_new_style")
def errback_new_style(request, exc, tb):
    redis_count(request.id)
    return request.id


@task(name="celery_suite.replaced_with_me")
def replaced_with_me():
    return True
