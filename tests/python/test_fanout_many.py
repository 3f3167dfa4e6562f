"""Enhanced fan-out with boto3 at scale and from every starting position.

Twenty consumers read one shard at once, each over its own SubscribeToShard event stream;
and a subscription started at a sequence number, after one, at a timestamp or at the trim
horizon begins at exactly the right record.
"""

from __future__ import annotations

import threading
import time

import pytest

import support
from conftest import make_client

SHARD = "shardId-000000000000"
CONSUMERS = 20
RECORDS = 200
# Subscriptions send an event at least every 5 s, so each blocking read returns well
# within this; the deadline bounds a whole read.
READ_DEADLINE = 20.0


@pytest.fixture
def fanout(endpoint):
    """A client with a connection per concurrent event stream."""
    client = make_client(endpoint, max_pool_connections=CONSUMERS + 10)
    yield client
    client.close()


def _register_active(kinesis, stream: str, names: list[str]) -> dict[str, str]:
    """Registers consumers and waits until every one is ACTIVE; returns name -> ARN."""
    arns = {}
    for name in names:
        consumer = kinesis.register_stream_consumer(
            StreamARN=support.stream_arn(stream), ConsumerName=name
        )["Consumer"]
        assert consumer["ConsumerName"] == name
        arns[name] = consumer["ConsumerARN"]

    def all_active():
        return all(
            kinesis.describe_stream_consumer(ConsumerARN=arn)["ConsumerDescription"][
                "ConsumerStatus"
            ]
            == "ACTIVE"
            for arn in arns.values()
        )

    support.poll(all_active, what="consumers ACTIVE")
    return arns


def _subscribe(kinesis, consumer_arn: str, position: dict):
    response = kinesis.subscribe_to_shard(
        ConsumerARN=consumer_arn, ShardId=SHARD, StartingPosition=position
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    return response["EventStream"]


def _read_until(events, last_sequence: str, deadline: float = READ_DEADLINE):
    """Reads events until the record `last_sequence` has arrived.

    Returns (records, ContinuationSequenceNumber of the last event read).
    """
    stop = time.monotonic() + deadline
    records: list[dict] = []
    continuation = None
    for event in events:
        payload = event["SubscribeToShardEvent"]
        assert payload["MillisBehindLatest"] >= 0
        assert not payload.get("ChildShards")
        records.extend(payload["Records"])
        continuation = payload["ContinuationSequenceNumber"]
        if records and records[-1]["SequenceNumber"] == last_sequence:
            return records, continuation
        if time.monotonic() > stop:
            break
    raise AssertionError(
        f"record {last_sequence} not delivered: got {len(records)} records, "
        f"last {records[-1]['SequenceNumber'] if records else None}"
    )


def _put(kinesis, stream: str, indexes) -> list[dict]:
    """PutRecord one at a time (each waits for the previous); returns what was written."""
    written = []
    for i in indexes:
        data = f"record-{i:04d}".encode()
        key = f"key-{i % 7}"
        out = kinesis.put_record(StreamName=stream, PartitionKey=key, Data=data)
        assert out["ShardId"] == SHARD
        written.append({"SequenceNumber": out["SequenceNumber"], "Data": data, "PartitionKey": key})
    return written


def _summary(records: list[dict]) -> list[tuple]:
    return [(r["SequenceNumber"], r["Data"], r["PartitionKey"]) for r in records]


def test_twenty_consumers_each_receive_every_record_in_order(kinesis, fanout, stream):
    arns = _register_active(kinesis, stream, [f"many-{i:02d}" for i in range(CONSUMERS)])
    listed = kinesis.list_stream_consumers(StreamARN=support.stream_arn(stream))["Consumers"]
    assert len(listed) == CONSUMERS

    subscribed = threading.Barrier(CONSUMERS + 1, timeout=READ_DEADLINE)
    results: dict[str, tuple] = {}
    failures: dict[str, BaseException] = {}

    def consume(name: str, arn: str):
        events = None
        try:
            events = _subscribe(fanout, arn, {"Type": "LATEST"})
            subscribed.wait()
            stop = time.monotonic() + READ_DEADLINE
            records: list[dict] = []
            continuation = None
            for event in events:
                payload = event["SubscribeToShardEvent"]
                assert payload["MillisBehindLatest"] >= 0
                records.extend(payload["Records"])
                continuation = payload["ContinuationSequenceNumber"]
                if len(records) >= RECORDS or time.monotonic() > stop:
                    break
            results[name] = (records, continuation)
        except BaseException as error:  # reported by the main thread
            failures[name] = error
            subscribed.abort()
        finally:
            if events is not None:
                events.close()

    threads = [
        threading.Thread(target=consume, args=(name, arn), name=name, daemon=True)
        for name, arn in arns.items()
    ]
    for thread in threads:
        thread.start()
    try:
        # Every subscription has its starting point once its response has begun.
        subscribed.wait()
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join(timeout=READ_DEADLINE)
        raise AssertionError(f"subscriptions failed: {failures!r}") from None

    written = []
    for batch in range(0, RECORDS, 100):
        entries = [
            {"Data": f"many-{i:04d}".encode(), "PartitionKey": f"pk-{i % 13}"}
            for i in range(batch, batch + 100)
        ]
        out = kinesis.put_records(StreamName=stream, Records=entries)
        assert out.get("FailedRecordCount", 0) == 0, out
        for entry, result in zip(entries, out["Records"]):
            assert result["ShardId"] == SHARD
            written.append((result["SequenceNumber"], entry["Data"], entry["PartitionKey"]))

    for thread in threads:
        thread.join(timeout=READ_DEADLINE + 5)
    assert not [t.name for t in threads if t.is_alive()], "consumers still reading"
    assert not failures, f"consumers failed: {failures!r}"
    assert sorted(results) == sorted(arns)
    sequences = [int(s) for s, _, _ in written]
    assert sequences == sorted(sequences) and len(set(sequences)) == RECORDS
    for name, (records, continuation) in sorted(results.items()):
        assert len(records) == RECORDS, f"{name} received {len(records)} of {RECORDS}"
        assert _summary(records) == written, f"{name} received other records or another order"
        assert continuation == written[-1][0], name


def test_starting_positions_begin_at_the_right_record(kinesis, stream):
    names = ["at-seq", "after-seq", "after-start", "at-ts", "trim", "resume", "resume-2"]
    arns = _register_active(kinesis, stream, names)

    first = _put(kinesis, stream, range(6))
    # A gap of a few milliseconds, so a timestamp can separate record 6 from record 5.
    arrivals, _ = support.read_from(kinesis, stream, SHARD)
    assert [r["SequenceNumber"] for r in arrivals] == [w["SequenceNumber"] for w in first]
    before_gap = arrivals[-1]["ApproximateArrivalTimestamp"].timestamp()
    support.poll(lambda: time.time() >= before_gap + 0.005, interval=0.001, what="the clock")
    written = first + _put(kinesis, stream, range(6, 12))
    seqs = [w["SequenceNumber"] for w in written]
    last = seqs[-1]

    records, _ = support.read_from(kinesis, stream, SHARD)
    assert _summary(records) == _summary(written)
    arrival_ms = [round(r["ApproximateArrivalTimestamp"].timestamp() * 1000) for r in records]
    assert arrival_ms[6] > arrival_ms[5], arrival_ms
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]
    starting = shard["SequenceNumberRange"]["StartingSequenceNumber"]

    cases = [
        ("at-seq", {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": seqs[3]}, 3),
        ("after-seq", {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": seqs[3]}, 4),
        ("after-start", {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": starting}, 0),
        (
            "at-ts",
            {"Type": "AT_TIMESTAMP", "Timestamp": records[6]["ApproximateArrivalTimestamp"]},
            6,
        ),
        ("trim", {"Type": "TRIM_HORIZON"}, 0),
    ]
    for name, position, start in cases:
        events = _subscribe(kinesis, arns[name], position)
        try:
            got, continuation = _read_until(events, last)
        finally:
            events.close()
        assert _summary(got) == _summary(written[start:]), f"{name} {position}"
        assert continuation == last, name

    # Resuming: the continuation of a subscription that has read everything so far, given
    # to a subscription of another consumer (a consumer cannot subscribe to the same shard
    # again within 5 s), picks up with exactly the next record.
    events = _subscribe(kinesis, arns["resume"], {"Type": "TRIM_HORIZON"})
    try:
        got, continuation = _read_until(events, last)
    finally:
        events.close()
    assert _summary(got) == _summary(written)
    assert continuation == last

    more = _put(kinesis, stream, range(12, 17))
    events = _subscribe(
        kinesis, arns["resume-2"], {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": continuation}
    )
    try:
        resumed, final = _read_until(events, more[-1]["SequenceNumber"])
    finally:
        events.close()
    assert _summary(resumed) == _summary(more)
    assert final == more[-1]["SequenceNumber"]
