"""Enhanced fan-out with boto3: SubscribeToShard over HTTP/1.1 as botocore speaks it."""

import threading

import pytest
from botocore.exceptions import ClientError

import support

HALF = 2**127


def _active_consumer(kinesis, stream: str, name: str) -> str:
    arn = kinesis.register_stream_consumer(StreamARN=support.stream_arn(stream), ConsumerName=name)[
        "Consumer"
    ]["ConsumerARN"]
    support.poll(
        lambda: kinesis.describe_stream_consumer(ConsumerARN=arn)["ConsumerDescription"][
            "ConsumerStatus"
        ]
        == "ACTIVE",
        what="consumer ACTIVE",
    )
    return arn


def test_subscribe_receives_records_put_afterwards_in_order(kinesis, stream):
    consumer = _active_consumer(kinesis, stream, "reader")
    response = kinesis.subscribe_to_shard(
        ConsumerARN=consumer,
        ShardId="shardId-000000000000",
        StartingPosition={"Type": "LATEST"},
    )
    events = response["EventStream"]
    sent = []

    def produce():
        for i in range(20):
            out = kinesis.put_record(StreamName=stream, PartitionKey=f"k{i}", Data=f"v{i}".encode())
            sent.append(out["SequenceNumber"])

    producer = threading.Thread(target=produce)
    producer.start()
    received = []
    continuation = None
    for event in events:
        payload = event["SubscribeToShardEvent"]
        for record in payload["Records"]:
            received.append((record["SequenceNumber"], record["Data"]))
        continuation = payload["ContinuationSequenceNumber"]
        assert payload["MillisBehindLatest"] >= 0
        if len(received) >= 20:
            break
    producer.join()
    events.close()
    assert [s for s, _ in received] == sent
    assert [d for _, d in received] == [f"v{i}".encode() for i in range(20)]
    assert continuation == sent[-1]


def test_subscription_follows_a_split_to_its_children(kinesis, stream):
    consumer = _active_consumer(kinesis, stream, "splitter")
    kinesis.put_record(StreamName=stream, PartitionKey="a", Data=b"before")
    events = kinesis.subscribe_to_shard(
        ConsumerARN=consumer,
        ShardId="shardId-000000000000",
        StartingPosition={"Type": "TRIM_HORIZON"},
    )["EventStream"]
    first = next(iter(events))["SubscribeToShardEvent"]
    assert [r["Data"] for r in first["Records"]] == [b"before"]
    kinesis.split_shard(
        StreamName=stream, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(HALF)
    )
    children = None
    for event in events:
        payload = event["SubscribeToShardEvent"]
        if payload.get("ChildShards"):
            children = payload["ChildShards"]
            assert "ContinuationSequenceNumber" not in payload or not payload["ContinuationSequenceNumber"]
            break
    events.close()
    assert [c["ShardId"] for c in children] == ["shardId-000000000001", "shardId-000000000002"]
    assert children[0]["ParentShards"] == ["shardId-000000000000"]


def test_second_subscription_within_five_seconds_is_refused(kinesis, stream):
    consumer = _active_consumer(kinesis, stream, "twice")
    first = kinesis.subscribe_to_shard(
        ConsumerARN=consumer, ShardId="shardId-000000000000", StartingPosition={"Type": "LATEST"}
    )["EventStream"]
    with pytest.raises(ClientError) as excinfo:
        kinesis.subscribe_to_shard(
            ConsumerARN=consumer,
            ShardId="shardId-000000000000",
            StartingPosition={"Type": "LATEST"},
        )
    assert excinfo.value.response["Error"]["Code"] == "ResourceInUseException"
    first.close()


def test_unknown_consumer_is_not_found(kinesis, stream):
    arn = support.stream_arn(stream) + "/consumer/nobody:1700000000"
    with pytest.raises(ClientError) as excinfo:
        kinesis.subscribe_to_shard(
            ConsumerARN=arn, ShardId="shardId-000000000000", StartingPosition={"Type": "LATEST"}
        )
    assert excinfo.value.response["Error"]["Code"] == "ResourceNotFoundException"
