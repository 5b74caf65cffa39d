"""Signals sent by the engine. Every one carries workflow and node ids."""

from __future__ import annotations

from django.dispatch import Signal

#: A workflow was persisted: ``workflow``.
workflow_created = Signal()
#: A workflow reached SUCCESS, FAILURE or REVOKED: ``workflow_id``, ``status``.
workflow_finished = Signal()
#: A node is about to run: ``node``.
node_started = Signal()
#: A node finished its run: ``node``, ``state`` (SUCCESS, RETRY or FAILURE; REVOKED
#: when the task raised ``Ignore``).
node_finished = Signal()
#: A node failed for good: ``node``, ``error``.
node_failed = Signal()
#: Nodes were revoked: ``workflow_id``, ``node_ids``.
nodes_revoked = Signal()

# Celery's signals, with Celery's names and arguments where they apply. Sending one
# that has no receiver costs nothing (no query is made for it).

#: A node is about to be handed to the transport: ``body`` (``{"id", "task",
#: "retries", "eta"}``), ``routing_key`` and ``exchange`` (the queue), ``headers``
#: (``{"id", "task", "root_id"}``), ``properties``, ``declare``, ``retry_policy``.
#: ``sender`` is the task name.
before_task_publish = Signal()
#: A node was handed to the transport: ``body``, ``exchange``, ``routing_key``.
after_task_publish = Signal()
#: A task function is about to run: ``task_id``, ``task``, ``args``, ``kwargs``.
task_prerun = Signal()
#: A task function returned or raised and its node was settled: ``task_id``, ``task``,
#: ``args``, ``kwargs``, ``retval``, ``state``.
task_postrun = Signal()
#: A task succeeded: ``result``. ``sender`` is the task.
task_success = Signal()
#: A task failed for good: ``task_id``, ``exception``, ``args``, ``kwargs``,
#: ``traceback``, ``einfo`` (the traceback text).
task_failure = Signal()
#: A retry was scheduled: ``request``, ``reason``, ``einfo``.
task_retry = Signal()
#: A node was revoked: ``request`` (None), ``task_id``, ``terminated`` (False),
#: ``signum`` (None), ``expired``.
task_revoked = Signal()
