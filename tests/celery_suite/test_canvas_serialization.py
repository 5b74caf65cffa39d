"""Celery's ``t/integration/test_canvas.py``, classes ``test_signature_serialization``
and ``test_stamping_mechanism``.

A nested canvas returned by a task comes back through the result store as JSON and is
rebuilt with ``signature(data)``. Celery's tasks return the signature itself, which is
a ``dict``; a canvas value here is not a dict, so the ported tasks return
``canvas.to_dict()`` (a task's result must be JSON data, and returning a canvas value
fails the task with a ``TypeError`` saying so).

Not applicable here (with the reason):

* ``test_stamping_mechanism``'s 12 tests (``test_stamping_workflow``,
  ``test_stamping_example_canvas``, ``test_stamp_value_type_defined_by_visitor``,
  ``test_properties_not_affected_from_stamping``,
  ``test_task_received_has_access_to_stamps``, ``test_all_tasks_of_canvas_are_stamped``,
  ``test_replace_merge_stamps``, ``test_linking_stamped_sig``,
  ``test_err_linking_stamped_sig``, ``test_stamps_remain_on_task_retry``,
  ``test_stamp_canvas_with_dictionary_link``,
  ``test_stamp_canvas_with_dictionary_link_error``): Celery's stamping API
  (``StampingVisitor``, message headers) is not offered; a canvas's nodes are found in
  the database by workflow instead.

Counts for this module: 21 Celery tests, 9 ported (all passing), 12 not applicable.
"""

from __future__ import annotations

import pytest

from django_cloudtasks import chain
from tests.celery_suite import tasks
from tests.celery_suite.running import TIMEOUT, run

pytestmark = pytest.mark.django_db(transaction=True)


def _rebuilds(returns):
    sig = chain(returns.s(), tasks.rebuild_signature.s())
    assert run(sig).get(timeout=TIMEOUT) is None


@pytest.mark.emulator
def test_rebuild_nested_chain_chain(path):
    _rebuilds(tasks.return_nested_signature_chain_chain)


def test_rebuild_nested_chain_group(path):
    _rebuilds(tasks.return_nested_signature_chain_group)


def test_rebuild_nested_chain_chord(path):
    _rebuilds(tasks.return_nested_signature_chain_chord)


def test_rebuild_nested_group_chain(path):
    _rebuilds(tasks.return_nested_signature_group_chain)


def test_rebuild_nested_group_group(path):
    _rebuilds(tasks.return_nested_signature_group_group)


def test_rebuild_nested_group_chord(path):
    _rebuilds(tasks.return_nested_signature_group_chord)


def test_rebuild_nested_chord_chain(path):
    _rebuilds(tasks.return_nested_signature_chord_chain)


def test_rebuild_nested_chord_group(path):
    _rebuilds(tasks.return_nested_signature_chord_group)


def test_rebuild_nested_chord_chord(path):
    _rebuilds(tasks.return_nested_signature_chord_chord)
