from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest

from canvas import Expression, Signature, signature


def test_a_signature_is_an_immutable_value(add):
    sig = add.s(2, 3)
    with pytest.raises(AttributeError, match="immutable"):
        sig.args = (1,)  # type: ignore[misc]
    assert sig == add.s(2, 3)
    assert hash(sig) == hash(add.s(2, 3))
    assert sig != add.s(3, 2)
    assert {sig, add.s(2, 3)} == {sig}


def test_set_returns_a_new_signature_and_leaves_the_original_alone(add):
    sig = add.s(1, 2)
    delayed = sig.set(countdown=10, queue="slow")
    assert delayed.options == {"countdown": 10, "queue": "slow"}
    assert sig.options == {}
    assert delayed.set(countdown=5).options == {"countdown": 5, "queue": "slow"}


def test_clone_prepends_args_and_merges_kwargs_like_celery(add):
    sig = add.s(2, z=1)
    assert sig.clone((1,), {"w": 3}).args == (1, 2)
    assert sig.clone((1,), {"w": 3}).kwargs == {"z": 1, "w": 3}
    assert sig.clone(countdown=3).options == {"countdown": 3}
    assert sig.args == (2,)


def test_clone_of_an_immutable_signature_ignores_new_arguments(add):
    sig = add.si(1, 2)
    assert sig.clone((5,), {"y": 1}) == sig


def test_on_error_accumulates_error_callbacks(add, identity):
    sig = add.s(1, 2).on_error(identity.si("a")).on_error(identity.si("b"))
    callbacks = [Expression.from_dict(d) for d in sig.options["link_error"]]
    assert callbacks == [identity.si("a"), identity.si("b")]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((object(),), {}, r"args\[0\] of 'add' is <object object"),
        ((1, {1, 2}), {}, r"args\[1\] of 'add' is \{1, 2\} of type set"),
        ((), {"when": datetime(2030, 1, 1)}, r"kwargs\['when'\] of 'add' .* datetime"),
        (([1, [2, b"x"]],), {}, r"args\[0\]\[1\]\[1\] of 'add' is b'x' of type bytes"),
        (({1: "a"},), {}, r"has the key 1 of type int"),
        ((float("nan"),), {}, r"args\[0\] of 'add' is nan"),
    ],
)
def test_non_json_arguments_are_refused_when_the_signature_is_built(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Signature("add", args, kwargs)


def test_non_json_options_are_refused_with_the_option_named(add):
    with pytest.raises(TypeError, match="option 'queue' of 'add'"):
        add.s(1, 2).set(queue=object())
    with pytest.raises(TypeError, match="unknown option 'countdwn'"):
        add.s(1, 2).set(countdwn=3)
    with pytest.raises(ValueError, match="must not be negative"):
        add.s(1, 2).set(countdown=-1)


def test_eta_and_expires_accept_aware_datetimes_and_refuse_naive_ones(add):
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    sig = add.s(1, 2).set(eta=moment, expires=moment + timedelta(hours=1))
    assert sig.options["eta"] == "2030-01-01T00:00:00+00:00"
    assert sig.options["expires"] == "2030-01-01T01:00:00+00:00"
    assert add.s(1, 2).set(expires=30).options["expires"] == 30
    with pytest.raises(ValueError, match="timezone-aware"):
        add.s(1, 2).set(eta=datetime(2030, 1, 1))


def test_retry_options_are_validated(add):
    sig = add.s().set(max_retries=3, retry_backoff=2, retry_backoff_max=60, retry_jitter=True)
    assert sig.options["max_retries"] == 3
    with pytest.raises(TypeError, match="max_retries"):
        add.s().set(max_retries=-1)
    with pytest.raises(TypeError, match="retry_jitter"):
        add.s().set(retry_jitter="yes")


def test_tuples_in_arguments_read_back_as_lists_so_nothing_changes_after_storage(add):
    sig = add.s((1, 2), {"k": (3,)})
    assert sig.args == ([1, 2], {"k": [3]})
    assert Expression.from_dict(sig.to_dict()) == sig


def test_signatures_round_trip_through_dicts_and_pickle(add, identity):
    sig = add.s(1, y=2).set(countdown=5).on_error(identity.si(0))
    assert Expression.from_dict(sig.to_dict()) == sig
    assert pickle.loads(pickle.dumps(sig)) == sig


def test_signature_helper_builds_by_name():
    assert signature("add", (1, 2), countdown=3) == Signature("add", (1, 2), {}, {"countdown": 3})


def test_bad_task_names_and_argument_containers_are_refused():
    with pytest.raises(TypeError, match="non-empty string"):
        Signature("")
    with pytest.raises(TypeError, match="list or tuple"):
        Signature("add", "12")
    with pytest.raises(TypeError, match="must be a dict"):
        Signature("add", (), [1])  # type: ignore[arg-type]


def test_repr_reads_like_the_code_that_built_it(add):
    assert repr(add.s(1, y=2)) == "add.s(1, y=2)"
    assert repr(add.si(1)) == "add.si(1)"
