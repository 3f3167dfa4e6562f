"""Writing and reading records through boto3."""

from __future__ import annotations

import datetime as dt
import time

from support import (
    MAX_HASH_KEY,
    all_shards,
    describe,
    expect_error,
    hash_key,
    read_from,
    read_shard,
    shard_for,
)

SHARD0 = "shardId-000000000000"


def _iterator(kinesis, stream, kind, shard=SHARD0, **kwargs):
    return kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType=kind, **kwargs
    )["ShardIterator"]


def _put_many(kinesis, stream, payloads, key="k"):
    return [
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey=key)["SequenceNumber"]
        for data in payloads
    ]


def _arrival_ms(record) -> int:
    return round(record["ApproximateArrivalTimestamp"].timestamp() * 1000)


def test_put_record_get_records_round_trip(kinesis, stream):
    payloads = [b"hello", bytes(range(256)), "snowman \u2603".encode(), b"\x00" * 1000, b"{}"]
    keys = ["alpha", "beta", "\u00fcnicode-key", "delta", "x" * 256]
    before = time.time()
    puts = [
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey=key)
        for data, key in zip(payloads, keys)
    ]
    after = time.time()
    for put in puts:
        assert put["ShardId"] == SHARD0
        assert put["SequenceNumber"].isdigit()
    sequence = [int(p["SequenceNumber"]) for p in puts]
    assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence)

    records, last = read_from(kinesis, stream, SHARD0)
    assert [r["Data"] for r in records] == payloads
    assert [r["PartitionKey"] for r in records] == keys
    assert [r["SequenceNumber"] for r in records] == [p["SequenceNumber"] for p in puts]
    for record in records:
        arrival = record["ApproximateArrivalTimestamp"]
        assert isinstance(arrival, dt.datetime)
        assert before - 2 <= arrival.timestamp() <= after + 2
    arrivals = [_arrival_ms(r) for r in records]
    assert arrivals == sorted(arrivals), "arrival times follow append order"
    assert last["MillisBehindLatest"] == 0
    assert "NextShardIterator" in last, "an open shard always hands out a next iterator"


def test_get_records_limit_and_millis_behind_latest(kinesis, stream):
    sequence = _put_many(kinesis, stream, [f"r{i}".encode() for i in range(5)])
    iterator = _iterator(kinesis, stream, "TRIM_HORIZON")

    seen = []
    for expected in (2, 2, 1):
        response = kinesis.get_records(ShardIterator=iterator, Limit=2)
        assert len(response["Records"]) == expected
        assert isinstance(response["MillisBehindLatest"], int)
        assert response["MillisBehindLatest"] >= 0
        seen.extend(r["SequenceNumber"] for r in response["Records"])
        iterator = response["NextShardIterator"]
    assert seen == sequence

    tail = kinesis.get_records(ShardIterator=iterator, Limit=2)
    assert tail["Records"] == []
    assert tail["MillisBehindLatest"] == 0
    # The iterator of an empty read still works once new data arrives.
    new = kinesis.put_record(StreamName=stream, Data=b"late", PartitionKey="k")
    records, _ = read_shard(kinesis, tail["NextShardIterator"])
    assert [r["SequenceNumber"] for r in records] == [new["SequenceNumber"]]


def test_shard_iterator_types(kinesis, stream):
    payloads = [f"m{i}".encode() for i in range(5)]
    sequence = _put_many(kinesis, stream, payloads)

    records, _ = read_from(kinesis, stream, SHARD0, "TRIM_HORIZON")
    assert [r["Data"] for r in records] == payloads

    records, _ = read_from(
        kinesis, stream, SHARD0, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=sequence[2]
    )
    assert [r["SequenceNumber"] for r in records] == sequence[2:]

    records, _ = read_from(
        kinesis, stream, SHARD0, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=sequence[2]
    )
    assert [r["SequenceNumber"] for r in records] == sequence[3:]

    records, _ = read_from(
        kinesis, stream, SHARD0, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=sequence[-1]
    )
    assert records == []

    latest = _iterator(kinesis, stream, "LATEST")
    empty = kinesis.get_records(ShardIterator=latest)
    assert empty["Records"] == []
    late = kinesis.put_record(StreamName=stream, Data=b"after-latest", PartitionKey="k")
    records, _ = read_shard(kinesis, empty["NextShardIterator"])
    assert [r["SequenceNumber"] for r in records] == [late["SequenceNumber"]]

    an_hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    records, _ = read_from(kinesis, stream, SHARD0, "AT_TIMESTAMP", Timestamp=an_hour_ago)
    assert [r["SequenceNumber"] for r in records] == sequence + [late["SequenceNumber"]]

    # Kinesis refuses a starting time in the future.
    in_an_hour = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    expect_error(
        "InvalidArgumentException",
        kinesis.get_shard_iterator,
        StreamName=stream,
        ShardId=SHARD0,
        ShardIteratorType="AT_TIMESTAMP",
        Timestamp=in_an_hour,
    )


def test_at_timestamp_is_millisecond_precise(kinesis, stream):
    first = _put_many(kinesis, stream, [b"a1", b"a2", b"a3"])
    records, _ = read_from(kinesis, stream, SHARD0)
    last_arrival = _arrival_ms(records[-1])
    # Let the clock move past the first batch's arrival time.
    while time.time() * 1000 < last_arrival + 5:
        time.sleep(0.001)
    second = _put_many(kinesis, stream, [b"b1", b"b2"])
    records, _ = read_from(kinesis, stream, SHARD0)
    by_sequence = {r["SequenceNumber"]: r for r in records}
    start = by_sequence[second[0]]["ApproximateArrivalTimestamp"]
    assert _arrival_ms(by_sequence[second[0]]) > last_arrival

    records, _ = read_from(kinesis, stream, SHARD0, "AT_TIMESTAMP", Timestamp=start)
    assert [r["SequenceNumber"] for r in records] == second
    assert len(first) == 3

    # Epoch seconds as a number also works (the CLI passes timestamps this way).
    records, _ = read_from(
        kinesis, stream, SHARD0, "AT_TIMESTAMP", Timestamp=start.timestamp()
    )
    assert [r["SequenceNumber"] for r in records] == second


def test_put_records_routes_by_md5_and_keeps_order(kinesis, make_stream):
    name = make_stream("routing", shards=4)
    shards = describe(kinesis, name)["Shards"]
    entries = [
        {"Data": f"{i}".encode(), "PartitionKey": f"user-{i % 7}"} for i in range(40)
    ]
    response = kinesis.put_records(StreamName=name, Records=entries)
    assert response["FailedRecordCount"] == 0
    assert len(response["Records"]) == len(entries)

    expected: dict[str, list[tuple[int, str]]] = {}
    for index, (entry, result) in enumerate(zip(entries, response["Records"])):
        assert "ErrorCode" not in result
        owner = shard_for(shards, hash_key(entry["PartitionKey"]))
        assert result["ShardId"] == owner, f"record {index} went to the wrong shard"
        expected.setdefault(owner, []).append((index, result["SequenceNumber"]))
    assert len(expected) >= 2, "seven keys over four shards should use several shards"

    total = 0
    for shard in shards:
        records, _ = read_from(kinesis, name, shard["ShardId"])
        total += len(records)
        want = expected.get(shard["ShardId"], [])
        # Same records, same order as submitted, with the sequence numbers PutRecords returned.
        assert [int(r["Data"]) for r in records] == [index for index, _ in want]
        assert [r["SequenceNumber"] for r in records] == [seq for _, seq in want]
        numbers = [int(r["SequenceNumber"]) for r in records]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        for record in records:
            assert record["PartitionKey"] == entries[int(record["Data"])]["PartitionKey"]
    assert total == len(entries)


def test_explicit_hash_key_overrides_partition_key(kinesis, make_stream):
    name = make_stream("ehk", shards=4)
    shards = all_shards(kinesis, name)
    starts = [s["HashKeyRange"]["StartingHashKey"] for s in shards]
    ends = [s["HashKeyRange"]["EndingHashKey"] for s in shards]

    put = kinesis.put_record(
        StreamName=name, Data=b"x", PartitionKey="same", ExplicitHashKey=starts[2]
    )
    assert put["ShardId"] == shards[2]["ShardId"]
    put = kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="same", ExplicitHashKey="0")
    assert put["ShardId"] == shards[0]["ShardId"]
    put = kinesis.put_record(
        StreamName=name, Data=b"x", PartitionKey="same", ExplicitHashKey=str(MAX_HASH_KEY)
    )
    assert put["ShardId"] == shards[3]["ShardId"]

    batch = kinesis.put_records(
        StreamName=name,
        Records=[
            {"Data": b"a", "PartitionKey": "same", "ExplicitHashKey": ends[1]},
            {"Data": b"b", "PartitionKey": "same", "ExplicitHashKey": starts[3]},
            {"Data": b"c", "PartitionKey": "same"},
        ],
    )
    assert batch["FailedRecordCount"] == 0
    assert [r["ShardId"] for r in batch["Records"]] == [
        shards[1]["ShardId"],
        shards[3]["ShardId"],
        shard_for(shards, hash_key("same")),
    ]
    records, _ = read_from(kinesis, name, shards[1]["ShardId"])
    expected = [(b"a", "same")]
    if shard_for(shards, hash_key("same")) == shards[1]["ShardId"]:
        expected.append((b"c", "same"))
    assert [(r["Data"], r["PartitionKey"]) for r in records] == expected

    expect_error(
        "InvalidArgumentException",
        kinesis.put_record,
        StreamName=name,
        Data=b"x",
        PartitionKey="k",
        ExplicitHashKey=str(2**128),
    )


def test_sequence_number_for_ordering(kinesis, stream):
    first = kinesis.put_record(StreamName=stream, Data=b"1", PartitionKey="k")
    second = kinesis.put_record(
        StreamName=stream,
        Data=b"2",
        PartitionKey="k",
        SequenceNumberForOrdering=first["SequenceNumber"],
    )
    assert int(second["SequenceNumber"]) > int(first["SequenceNumber"])


def test_largest_record_round_trips(kinesis, stream):
    data = bytes(i % 251 for i in range(1024 * 1024 - 1))
    put = kinesis.put_record(StreamName=stream, Data=data, PartitionKey="k")
    records, _ = read_from(
        kinesis, stream, SHARD0, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=put["SequenceNumber"]
    )
    assert len(records) == 1
    assert records[0]["Data"] == data
