"""Signals sent by the engine. Every one carries workflow and node ids."""

from __future__ import annotations

from django.dispatch import Signal

#: A workflow was persisted: ``workflow``.
workflow_created = Signal()
#: A workflow reached SUCCESS, FAILURE or REVOKED: ``workflow_id``, ``status``.
workflow_finished = Signal()
#: A node is about to run: ``node``.
node_started = Signal()
#: A node finished its run: ``node``, ``state`` (SUCCESS, RETRY or FAILURE).
node_finished = Signal()
#: A node failed for good: ``node``, ``error``.
node_failed = Signal()
#: Nodes were revoked: ``workflow_id``, ``node_ids``.
nodes_revoked = Signal()
