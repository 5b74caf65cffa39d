"""A large fan-out: queue shards, spawner tasks and their pacing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from django_cloudtasks import chord, group
from django_cloudtasks.engine import join_shards
from django_cloudtasks.exceptions import ConfigurationError
from django_cloudtasks.management.queue_settings import configured_queues
from django_cloudtasks.transports import Dispatch, cloudtasks, fanout
from tests.testapp.tasks import identity, quiet_sum


def dispatch(i: int, queue: str = "bulk") -> Dispatch:
    return Dispatch(
        node_id=f"00000000-0000-0000-0000-{i:012d}", workflow_id="w", task_name="t", queue=queue
    )


def test_a_queue_with_shards_spreads_its_deliveries_over_them_always_the_same_way(settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUES": {"bulk": {"shards": 4}}}
    chosen = [fanout.shard_of(dispatch(i)) for i in range(400)]
    assert set(chosen) == {"bulk", "bulk-1", "bulk-2", "bulk-3"}
    assert min(chosen.count(q) for q in set(chosen)) > 60
    assert chosen == [fanout.shard_of(dispatch(i)) for i in range(400)]
    assert fanout.shard_of(dispatch(1, queue="other")) == "other"


def test_the_queues_command_creates_every_shard_with_the_queues_settings(settings):
    settings.CLOUDTASKS = {
        **settings.CLOUDTASKS,
        "QUEUE": "default",
        "QUEUES": {"bulk": {"shards": 3, "max_dispatches_per_second": 500}},
    }
    specs = {s.queue_id: dict(s.settings) for s in configured_queues()}
    assert specs["bulk"] == specs["bulk-1"] == specs["bulk-2"] == {"max_dispatches_per_second": 500}
    assert "bulk-3" not in specs


@pytest.mark.parametrize("shards", [0, 1.5, True, "2", 101])
def test_shards_must_be_a_whole_number_from_one_to_a_hundred(settings, shards):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUES": {"bulk": {"shards": shards}}}
    with pytest.raises(ConfigurationError, match="shards"):
        configured_queues()


def test_tasks_are_created_at_500_a_second_then_50_percent_faster_every_five_minutes():
    assert fanout.creation_offset(0) == 0
    assert fanout.creation_offset(500) == pytest.approx(1.0)
    assert fanout.creation_offset(150_000) == pytest.approx(300.0)
    assert fanout.creation_offset(150_000 + 750) == pytest.approx(301.0)
    assert fanout.creation_offset(150_000 + 225_000 + 1_125) == pytest.approx(601.0)


def test_a_fan_out_is_cut_into_paced_spawners_per_shard(settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUES": {"bulk": {"shards": 2}}}
    spawns = fanout.spawners([dispatch(i) for i in range(2_000)])
    assert sum(len(s.dispatches) for s in spawns) == 2_000
    assert all(len(s.dispatches) <= fanout.SPAWN_BATCH for s in spawns)
    for queue in ("bulk", "bulk-1"):
        offsets = [s.offset for s in spawns if s.queue == queue]
        assert offsets == sorted(offsets) and offsets[0] == 0
        assert offsets[-1] == pytest.approx((len(offsets) - 1) * fanout.SPAWN_BATCH / 500)
        assert all(
            fanout.shard_of(d) == queue for s in spawns if s.queue == queue for d in s.dispatches
        )
    again = fanout.spawners([dispatch(i) for i in range(2_000)])
    assert [s.task_id for s in again] == [s.task_id for s in spawns]


def test_a_dispatch_survives_the_spawners_body():
    original = Dispatch(
        "n",
        "w",
        "t",
        retries=2,
        eta=datetime(2030, 1, 1, tzinfo=UTC),
        queue="q",
        dispatch_deadline=30.0,
        takeover=1,
        deferred=3,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    body = json.loads(json.dumps(fanout.Spawn("q", 0, [original]).body()))
    [decoded] = [fanout.decode(d) for d in body["spawn"]]
    assert decoded == original and decoded.traceparent == original.traceparent


class Recorder:
    """A Cloud Tasks client that records CreateTask requests."""

    def __init__(self):
        self.requests = []
        self.transport = self

    def close(self):
        pass

    def create_task(self, request, retry=None, timeout=None):
        self.requests.append(request)


def test_a_send_above_the_direct_limit_creates_spawners_instead(settings):
    settings.CLOUDTASKS = {
        **settings.CLOUDTASKS,
        "PROJECT": "p",
        "LOCATION": "l",
        "BASE_URL": "https://app",
        "AUTH_TOKEN": "secret",
        "QUEUES": {"bulk": {"shards": 2}},
    }
    client = Recorder()
    transport = cloudtasks.CloudTasksTransport(client=client)
    try:
        transport.send([dispatch(i) for i in range(fanout.DIRECT_LIMIT)])
        assert len(client.requests) == fanout.DIRECT_LIMIT
        client.requests.clear()
        transport.send([dispatch(i) for i in range(fanout.DIRECT_LIMIT + 1)])
    finally:
        transport.close()
    urls = {r.task.http_request.url for r in client.requests}
    assert urls == {"https://app/cloudtasks/spawn/"}
    assert {r.parent.rsplit("/", 1)[1] for r in client.requests} == {"bulk", "bulk-1"}
    assert all(
        r.task.http_request.headers["Authorization"] == "Bearer secret" for r in client.requests
    )
    sizes = [len(json.loads(r.task.http_request.body)["spawn"]) for r in client.requests]
    assert sum(sizes) == fanout.DIRECT_LIMIT + 1


@pytest.mark.django_db(transaction=True)
def test_a_chord_on_a_sharded_queue_runs_through_spawners_over_http(serve_emulator, monkeypatch):
    monkeypatch.setattr(cloudtasks, "DIRECT_LIMIT", 20)
    monkeypatch.setattr(fanout, "SPAWN_BATCH", 10)
    monkeypatch.setattr(join_shards, "JOIN_SHARD_SIZE", 15)
    # Every member delivered by Cloud Tasks (none stolen by an inline run): 60 runs.
    emulator = serve_emulator(
        queues=("default", "default-1", "default-2"),
        settings_changes={"QUEUES": {"default": {"shards": 3}}, "INLINE_SECONDS": 0},
    )
    result = chord([identity.si(i) for i in range(60)], quiet_sum.s()).delay()
    assert result.get(timeout=60) == sum(range(60))
    assert emulator.wait_until_idle(timeout=10)
    runs = [r for r in emulator.history if r.succeeded]
    spawned = [r for r in runs if r.url.endswith("/cloudtasks/spawn/")]
    assert len(spawned) >= 6
    members = [r for r in runs if "/cloudtasks/run/identity/" in r.url]
    assert len(members) == 60
    assert {r.queue_name.rsplit("/", 1)[-1] for r in members} == {
        "default",
        "default-1",
        "default-2",
    }


@pytest.mark.django_db(transaction=True)
def test_a_bounded_group_on_a_sharded_queue_keeps_its_bound(serve_emulator, monkeypatch):
    monkeypatch.setattr(join_shards, "JOIN_SHARD_SIZE", 5)
    serve_emulator(
        queues=("default", "default-1"), settings_changes={"QUEUES": {"default": {"shards": 2}}}
    )
    result = group(identity.si(i) for i in range(20)).set(max_concurrency=3).delay()
    assert result.get(timeout=60) == list(range(20))


def _queued_batch(memory, size: int) -> list[Dispatch]:
    """The dispatches of a new group of ``size``, taken back from the memory transport."""
    group(identity.si(i) for i in range(size)).apply_async()
    batch = memory.pending
    memory.clear()
    return batch


@pytest.mark.django_db(transaction=True)
def test_the_spawn_endpoint_creates_its_batch_and_refuses_a_bad_body(client, memory):
    batch = _queued_batch(memory, 3)
    body = json.dumps(fanout.Spawn("", 0, batch).body())
    headers = {"Authorization": "Bearer test-token"}

    answer = client.post(
        "/cloudtasks/spawn/", body, content_type="application/json", headers=headers
    )
    assert answer.status_code == 200 and answer.json() == {"created": 3}
    assert memory.sent == batch
    bad = client.post(
        "/cloudtasks/spawn/", '{"spawn": [{}]}', content_type="application/json", headers=headers
    )
    assert bad.status_code == 400
    assert (
        client.post("/cloudtasks/spawn/", body, content_type="application/json").status_code == 401
    )


@pytest.mark.django_db(transaction=True)
def test_a_spawner_leaves_out_the_nodes_taken_or_finished_before_it_ran(client, memory):
    from django_cloudtasks.constants import State
    from django_cloudtasks.models import Node

    batch = _queued_batch(memory, 4)
    Node.objects.filter(pk=batch[1].node_id).update(state=State.STARTED)  # stolen
    Node.objects.filter(pk=batch[2].node_id).update(state=State.SUCCESS)
    body = json.dumps(fanout.Spawn("", 0, batch).body())
    answer = client.post(
        "/cloudtasks/spawn/",
        body,
        content_type="application/json",
        headers={"Authorization": "Bearer test-token"},
    )
    assert answer.json() == {"created": 2}
    assert memory.sent == [batch[0], batch[3]]
