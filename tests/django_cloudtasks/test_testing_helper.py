"""The testing helper works in users' own suites: pytest fixtures and Django's TestCase."""

from __future__ import annotations

import pytest
from django.test import TestCase

from django_cloudtasks import group
from django_cloudtasks.constants import State
from django_cloudtasks.testing import capture_tasks
from tests.testapp.models import Execution
from tests.testapp.tasks import add, tsum


@pytest.mark.django_db
def test_the_fixture_records_and_runs_inside_a_test_transaction(cloudtasks):
    result = (group(add.si(1, 1), add.si(2, 2)) | tsum.s()).delay()
    assert cloudtasks.task_names() == ["add", "add"]
    assert cloudtasks.run() == 3
    assert result.get(timeout=0) == 6
    assert result.state == State.SUCCESS
    assert Execution.objects.filter(task="add").count() == 2


@pytest.mark.django_db
def test_the_eager_fixture_finishes_workflows_inside_delay(cloudtasks_eager):
    assert (add.s(1, 2) | add.s(3)).delay().get(timeout=0) == 6


@pytest.mark.django_db
def test_eager_propagates_as_the_testing_page_shows(cloudtasks_eager, settings):
    from tests.testapp.tasks import fail

    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "EAGER_PROPAGATES": True}
    with pytest.raises(ValueError, match="failing on purpose"):
        fail.delay(0)


class CaptureTasksInATestCase(TestCase):
    def test_capture_tasks_runs_workflows_in_a_testcase(self):
        with capture_tasks() as tasks:
            result = add.s(20, 22).delay()
            assert tasks.pending[0].task_name == "add"
            tasks.run()
        self.assertEqual(result.get(timeout=0), 42)

    def test_the_previous_transport_is_restored_afterwards(self):
        from django_cloudtasks.transports import get_transport

        with capture_tasks(eager=True):
            self.assertEqual(get_transport().name, "eager")
        self.assertEqual(get_transport().name, "memory")
