"""The statements of flow control: a key's slots, its line of waiting nodes, its pace.

A key's row (:class:`~django_cloudtasks.models.FlowKey`) is updated first in every
change to its slots, so that the row lock serialises them across servers: a node
that frees a slot and a node that finds the key full cannot miss each other. The
engine takes the rows of several keys in the order of their names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection

from django_cloudtasks.constants import State
from django_cloudtasks.models import FlowKey, Node
from django_cloudtasks.store.rows import NODE_FIELDS, node_from_db

SQL_WAITING = f"'{State.WAITING.value}'"


@dataclass(frozen=True)
class Slots:
    """What one statement on a key did: slots given to newcomers and to waiters."""

    granted: int
    handed: int
    next_start: float | None = None
    #: The nodes taken out of line in the same statement (see :meth:`promote`).
    promoted: tuple[Node, ...] = ()


class FlowStatements:
    """Flow-control statements; the store of each database gives the dialect."""

    def least(self) -> str:
        """The name of the n-ary minimum function."""
        raise NotImplementedError

    def greatest(self) -> str:
        """The name of the n-ary maximum function."""
        raise NotImplementedError

    def skip_locked(self) -> str:
        """What makes a subquery skip rows other transactions hold locked."""
        return ""

    #: Whether :meth:`take_slots` also takes the waiters it hands slots to out of line.
    promotes_with_slots = False

    def take_slots(
        self,
        key: str,
        *,
        arriving: int = 0,
        released: int = 0,
        unwaited: int = 0,
        capacity: int | None = None,
        interval: float | None = None,
        now: datetime,
    ) -> Slots:
        """Update key ``key`` in one statement and say which slots it gave.

        ``released`` holders gave their slot back and ``unwaited`` nodes left the
        line (revoked); the free slots go first to the nodes already in line (as many
        as :attr:`Slots.handed`, for :meth:`promote` to pick), then to the
        ``arriving`` nodes (:attr:`Slots.granted`); arriving nodes without one join the
        line. ``capacity`` is the key's ``max_concurrency`` (default: the last one
        applied). With ``interval`` (seconds between starts), the nodes given a slot
        are paced: :attr:`Slots.next_start` is when the one after them may start.
        Where :attr:`promotes_with_slots`, the same statement takes the waiters it
        handed slots to out of line (:attr:`Slots.promoted`; a waiter that joined the
        line while this statement waited for the key is left for :meth:`promote`).
        """
        qn = connection.ops.quote_name
        table = qn(FlowKey._meta.db_table)
        least, greatest = self.least(), self.greatest()
        # Numbers are validated ints and floats, written as literals; each expression
        # reads the row as it was before the update, as SQL's SET does.
        arriving, released, unwaited = int(arriving), int(released), int(unwaited)
        cap_sql = "NULL" if capacity is None else str(int(capacity))
        now_s = float(now.timestamp())
        running = f"{greatest}(0, {table}.running - {released})"
        waiting = f"{greatest}(0, {table}.waiting - {unwaited})"
        cap = f"COALESCE({cap_sql}, {table}.capacity, 0)"
        free = f"{greatest}(0, {cap} - {running})"
        handed = f"{least}({waiting}, {free})"
        granted = f"{least}({arriving}, {free} - {handed})"
        sets = [
            f"handed = {handed}",
            f"granted = {granted}",
            f"running = {running} + {handed} + {granted}",
            f"waiting = {waiting} - {handed} + {arriving} - {granted}",
            f"capacity = COALESCE({cap_sql}, {table}.capacity)",
            "updated_at = %s",
        ]
        fresh = arriving if capacity is None else min(arriving, int(capacity))
        if capacity is None and arriving:
            fresh = 0
        next_fresh: float | None = None
        rate: float | None = None
        if interval:
            step = float(interval)
            sets.append(
                f"next_start = {greatest}(COALESCE({table}.next_start, 0), {now_s!r}) "
                f"+ ({handed} + {granted}) * {step!r}"
            )
            rate = 1 / step
            sets.append(f"rate = {rate!r}")
            next_fresh = now_s + fresh * step
        columns = ", ".join(
            qn(c)
            for c in (
                "key",
                "running",
                "waiting",
                "capacity",
                "rate",
                "next_start",
                "granted",
                "handed",
                "updated_at",
            )
        )
        sql = (
            f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, %s) "
            f"ON CONFLICT ({qn('key')}) DO UPDATE SET {', '.join(sets)} "
            "RETURNING granted, handed, next_start"
        )
        now_db = FlowKey._meta.get_field("updated_at").get_db_prep_value(now, connection)
        params = [key, fresh, arriving - fresh, capacity, rate, next_fresh, fresh, now_db, now_db]
        if self.promotes_with_slots and (released or unwaited):
            promote_sql, promote_params = self._promote_sql(key, "(SELECT handed FROM k)", now)
            sql = (
                f"WITH k AS ({sql}), p AS ({promote_sql}) "
                "SELECT k.granted, k.handed, k.next_start, p.* FROM k LEFT JOIN p ON TRUE"
            )
            params += promote_params
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        granted_n, handed_n, next_start = rows[0][:3]
        promoted = tuple(node_from_db(r[3:]) for r in rows if len(r) > 3 and r[3] is not None)
        return Slots(int(granted_n), int(handed_n), next_start, promoted)

    #: Whether :meth:`pace` also writes the paced nodes' ETAs, in the same statement.
    paces_nodes = False

    def pace(
        self, key: str, count: int, interval: float, now: datetime, node_ids: Sequence[Any] = ()
    ) -> float:
        """Pace ``count`` starts of rate-limit key ``key``, ``interval`` seconds apart.

        Returns when the one after them may start (seconds since the epoch); the
        ``count`` starts are the ``count`` intervals before it. Where
        :attr:`paces_nodes`, the stored nodes ``node_ids`` (the ``count`` paced, in
        order) get their start as ETA in the same statement.
        """
        qn = connection.ops.quote_name
        table = qn(FlowKey._meta.db_table)
        step, now_s = float(interval), float(now.timestamp())
        now_db = FlowKey._meta.get_field("updated_at").get_db_prep_value(now, connection)
        sql = (
            f"INSERT INTO {table} ({qn('key')}, running, waiting, rate, next_start, granted, "
            "handed, updated_at) VALUES (%s, 0, 0, %s, %s, 0, 0, %s) "
            f"ON CONFLICT ({qn('key')}) DO UPDATE SET next_start = "
            f"{self.greatest()}(COALESCE({table}.next_start, 0), {now_s!r}) + "
            f"{int(count)} * {step!r}, rate = {1 / step!r}, updated_at = %s "
            "RETURNING next_start"
        )
        params: list[Any] = [key, 1 / step, now_s + count * step, now_db, now_db]
        if self.paces_nodes and node_ids:
            sql, extra = self._pace_nodes_sql(sql, len(node_ids), step, now, node_ids)
            params += extra
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            (next_start,) = cursor.fetchone()
        return float(next_start)

    def _pace_nodes_sql(
        self, sql: str, count: int, step: float, now: datetime, node_ids: Sequence[Any]
    ) -> tuple[str, list[Any]]:
        raise NotImplementedError

    def give_back(self, key: str, count: int, now: datetime) -> None:
        """Put back ``count`` slots handed to the line that :meth:`promote` could not use."""
        qn = connection.ops.quote_name
        table = qn(FlowKey._meta.db_table)
        now_db = FlowKey._meta.get_field("updated_at").get_db_prep_value(now, connection)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET running = running - %s, waiting = waiting + %s, "
                f"updated_at = %s WHERE {qn('key')} = %s",
                [count, count, now_db, key],
            )

    def promote(self, key: str, count: int, now: datetime) -> list[Node]:
        """Move the ``count`` longest-waiting nodes of ``key`` out of line, ready to send.

        Nodes another transaction holds locked (being revoked) are passed over.
        Returns them, every column read back.
        """
        sql, params = self._promote_sql(key, "%s", now)
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, int(count)])
            rows = cursor.fetchall()
        return [node_from_db(r) for r in rows]

    def _promote_sql(self, key: str, limit: str, now: datetime) -> tuple[str, list[Any]]:
        qn = connection.ops.quote_name
        table = qn(Node._meta.db_table)
        now_db = Node._meta.get_field("ready_at").get_db_prep_value(now, connection)
        columns = ", ".join(f"{table}.{qn(str(f.column))}" for f in NODE_FIELDS)
        sql = (
            f"UPDATE {table} SET state = CASE WHEN countdown > 0 OR (eta IS NOT NULL AND "
            f"eta > %s) THEN '{State.SCHEDULED.value}' ELSE '{State.QUEUED.value}' END "
            f"WHERE id IN (SELECT id FROM {table} WHERE flow_key = %s AND "
            f"state = {SQL_WAITING} ORDER BY ready_at, {qn('index')}, id LIMIT {limit}"
            f"{self.skip_locked()}) RETURNING {columns}"
        )
        return sql, [now_db, key]

    def set_starts(self, starts: Sequence[tuple[Any, datetime]]) -> None:
        """Give each node of ``starts`` (id, moment) that ETA, SCHEDULED if it is later."""
        if not starts:
            return
        if len(starts) > 5000:  # three parameters a node: stay under SQLite's limit
            for first in range(0, len(starts), 5000):
                self.set_starts(starts[first : first + 5000])
            return
        qn = connection.ops.quote_name
        table = qn(Node._meta.db_table)
        prep_pk = Node._meta.pk.get_db_prep_value  # type: ignore[union-attr]
        moment = Node._meta.get_field("eta")
        cases = " ".join("WHEN %s THEN %s" for _ in starts)
        params: list[Any] = []
        for node_id, start in starts:
            params += [prep_pk(node_id, connection), moment.get_db_prep_value(start, connection)]
        ids = [prep_pk(node_id, connection) for node_id, _ in starts]
        placeholders = ", ".join("%s" for _ in ids)
        scheduled = f"'{State.SCHEDULED.value}'"
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET eta = CASE id {cases} END, state = CASE WHEN state IN "
                f"('{State.QUEUED.value}', {scheduled}) THEN {scheduled} ELSE state END "
                f"WHERE id IN ({placeholders})",
                [*params, *ids],
            )
