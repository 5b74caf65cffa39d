"""Choosing a transport by short name or by dotted path."""

from __future__ import annotations

import pytest

from django_cloudtasks.checks import check_settings
from django_cloudtasks.constants import State
from django_cloudtasks.models import Node
from django_cloudtasks.transports import get_transport, reset_transport, transport_class
from django_cloudtasks.transports.memory import MemoryTransport
from tests.testapp import tasks


class CountingTransport(MemoryTransport):
    """A user's own transport: the memory transport, counting its sends."""

    sends = 0

    def send(self, dispatches):
        CountingTransport.sends += 1
        super().send(dispatches)


def use(settings, name):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": name}
    reset_transport()


@pytest.mark.django_db(transaction=True)
def test_a_transport_named_by_its_dotted_path_runs_the_nodes(settings):
    use(settings, "django_cloudtasks.transports.memory.MemoryTransport")
    result = tasks.add.delay(2, 3)
    transport = get_transport()
    assert isinstance(transport, MemoryTransport)
    assert transport.drain() == 1
    assert Node.objects.get(pk=result.id).state == State.SUCCESS
    reset_transport()


@pytest.mark.django_db(transaction=True)
def test_a_users_own_transport_class_is_built_with_the_delivery_function(settings):
    use(settings, f"{__name__}.CountingTransport")
    before = CountingTransport.sends
    result = tasks.add.delay(2, 3)
    transport = get_transport()
    assert isinstance(transport, CountingTransport)
    transport.drain()
    assert CountingTransport.sends == before + 1
    assert result.get(timeout=1) == 5
    reset_transport()


@pytest.mark.parametrize("name", ["cloudtasks", "eager", "memory"])
def test_a_short_name_is_an_alias_of_a_dotted_path(name):
    path = f"{transport_class(name).__module__}.{transport_class(name).__name__}"
    assert transport_class(path) is transport_class(name)


def test_a_dotted_path_to_something_that_is_not_a_transport_is_e001(settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": "django_cloudtasks.models.Node"}
    assert [m.id for m in check_settings()] == ["django_cloudtasks.E001"]


def test_the_cloudtasks_transport_by_path_needs_a_project_like_its_short_name(settings):
    path = "django_cloudtasks.transports.cloudtasks.CloudTasksTransport"
    settings.CLOUDTASKS = {"TRANSPORT": path, "AUTH_TOKEN": "x"}
    assert "django_cloudtasks.E002" in [m.id for m in check_settings()]
