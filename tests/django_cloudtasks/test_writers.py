"""The one-writer watch every test of the Django side runs under (conftest.py)."""

from __future__ import annotations

import pytest

from django_cloudtasks.constants import State
from django_cloudtasks.models import Node
from tests.django_cloudtasks.writers import watch_writers
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db


def _as_module(name: str, source: str) -> dict:
    """Run ``source`` as if it were the module ``name`` of the package."""
    namespace = {"__name__": name, "Node": Node, "State": State}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


@pytest.mark.writes_outside_the_engine
@pytest.mark.parametrize(
    "source",
    [
        "def write(pk):\n    Node.objects.filter(pk=pk).update(state=State.REVOKED)\n",
        "def write(pk):\n    rows = Node.objects.filter(pk=pk)\n    rows.update(state='REVOKED')\n",
        "def write(pk):\n    node = Node.objects.get(pk=pk)\n    node.state = 'REVOKED'\n"
        "    node.save(update_fields=['state'])\n",
        "def write(pk):\n    from django.db import connection\n"
        "    with connection.cursor() as c:\n"
        "        c.execute('UPDATE django_cloudtasks_node SET state = %s', ['REVOKED'])\n",
    ],
    ids=["chained update", "queryset in a variable", "save", "raw SQL"],
)
def test_a_write_of_node_rows_from_outside_the_engine_is_caught(memory, source):
    node_id = add.delay(1, 2).id
    write = _as_module("django_cloudtasks.admin.nodes", source)["write"]

    with watch_writers() as strays:
        write(node_id)

    assert len(strays) == 1
    assert strays[0].startswith("django_cloudtasks.admin.nodes: UPDATE")


def test_the_engine_and_a_test_itself_may_write_node_rows(memory):
    node_id = add.delay(1, 2).id

    with watch_writers() as strays:
        memory.drain()  # the runner settles through the engine
        Node.objects.filter(pk=node_id).update(state=State.REVOKED)  # the test's own write

    assert strays == []
    assert Node.objects.get(pk=node_id).state == State.REVOKED
