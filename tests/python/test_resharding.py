"""SplitShard, MergeShards, UpdateShardCount and ListShards through boto3."""

from __future__ import annotations

import datetime as dt

from support import (
    MAX_HASH_KEY,
    all_shards,
    assert_covers_key_space,
    describe,
    expect_error,
    hash_key,
    open_shards,
    read_from,
    shard_for,
    wait_active,
)

HALF = 2**127


def _key_in(low: int, high: int, prefix: str) -> str:
    """A partition key whose MD5 hash lands in [low, high]."""
    for i in range(10_000):
        key = f"{prefix}-{i}"
        if low <= hash_key(key) <= high:
            return key
    raise AssertionError("no key found")


def _ids(shards):
    return [s["ShardId"] for s in shards]


def test_split_shard_then_read_parent_to_end_and_children(kinesis, stream):
    before = [
        kinesis.put_record(StreamName=stream, Data=f"before-{i}".encode(), PartitionKey=f"k{i}")
        for i in range(3)
    ]

    kinesis.split_shard(
        StreamName=stream, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(HALF)
    )
    wait_active(kinesis, stream)

    shards = describe(kinesis, stream)["Shards"]
    assert _ids(shards) == [
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
    ]
    parent, low, high = shards
    assert "EndingSequenceNumber" in parent["SequenceNumberRange"]
    assert int(parent["SequenceNumberRange"]["EndingSequenceNumber"]) >= int(
        before[-1]["SequenceNumber"]
    )
    assert low["ParentShardId"] == parent["ShardId"]
    assert high["ParentShardId"] == parent["ShardId"]
    assert low["HashKeyRange"] == {"StartingHashKey": "0", "EndingHashKey": str(HALF - 1)}
    assert high["HashKeyRange"] == {
        "StartingHashKey": str(HALF),
        "EndingHashKey": str(MAX_HASH_KEY),
    }
    for child in (low, high):
        assert "EndingSequenceNumber" not in child["SequenceNumberRange"]
        assert int(child["SequenceNumberRange"]["StartingSequenceNumber"]) > int(
            before[-1]["SequenceNumber"]
        )
    assert_covers_key_space(shards)
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 2

    # New writes go to the children; the parent takes no more.
    low_key = _key_in(0, HALF - 1, "low")
    high_key = _key_in(HALF, MAX_HASH_KEY, "high")
    put_low = kinesis.put_record(StreamName=stream, Data=b"to-low", PartitionKey=low_key)
    put_high = kinesis.put_record(StreamName=stream, Data=b"to-high", PartitionKey=high_key)
    assert put_low["ShardId"] == low["ShardId"]
    assert put_high["ShardId"] == high["ShardId"]

    # Reading the closed parent: its records, then ChildShards and no next iterator.
    records, last = read_from(kinesis, stream, parent["ShardId"])
    assert [r["SequenceNumber"] for r in records] == [p["SequenceNumber"] for p in before]
    assert "NextShardIterator" not in last or last["NextShardIterator"] is None
    assert last["MillisBehindLatest"] == 0
    children = sorted(last["ChildShards"], key=lambda c: c["ShardId"])
    assert children == [
        {
            "ShardId": low["ShardId"],
            "ParentShards": [parent["ShardId"]],
            "HashKeyRange": low["HashKeyRange"],
        },
        {
            "ShardId": high["ShardId"],
            "ParentShards": [parent["ShardId"]],
            "HashKeyRange": high["HashKeyRange"],
        },
    ]

    records, _ = read_from(kinesis, stream, low["ShardId"])
    assert [(r["Data"], r["PartitionKey"]) for r in records] == [(b"to-low", low_key)]
    records, _ = read_from(kinesis, stream, high["ShardId"])
    assert [(r["Data"], r["PartitionKey"]) for r in records] == [(b"to-high", high_key)]

    # ListShards filters.
    assert _ids(all_shards(kinesis, stream)) == _ids(shards)
    latest = kinesis.list_shards(StreamName=stream, ShardFilter={"Type": "AT_LATEST"})["Shards"]
    assert _ids(latest) == [low["ShardId"], high["ShardId"]]
    after = kinesis.list_shards(
        StreamName=stream,
        ShardFilter={"Type": "AFTER_SHARD_ID", "ShardId": parent["ShardId"]},
    )["Shards"]
    assert _ids(after) == [low["ShardId"], high["ShardId"]]
    from_horizon = kinesis.list_shards(
        StreamName=stream, ShardFilter={"Type": "FROM_TRIM_HORIZON"}
    )["Shards"]
    assert _ids(from_horizon) == _ids(shards)
    exclusive = kinesis.list_shards(StreamName=stream, ExclusiveStartShardId=low["ShardId"])
    assert _ids(exclusive["Shards"]) == [high["ShardId"]]


def test_list_shards_time_filters_after_split(kinesis, stream):
    before_split = dt.datetime.now(dt.timezone.utc)
    kinesis.split_shard(
        StreamName=stream, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(HALF)
    )
    wait_active(kinesis, stream)
    parent, low, high = _ids(describe(kinesis, stream)["Shards"])

    at_time = kinesis.list_shards(
        StreamName=stream, ShardFilter={"Type": "AT_TIMESTAMP", "Timestamp": before_split}
    )["Shards"]
    assert _ids(at_time) == [parent]
    from_time = kinesis.list_shards(
        StreamName=stream, ShardFilter={"Type": "FROM_TIMESTAMP", "Timestamp": before_split}
    )["Shards"]
    assert _ids(from_time) == [parent, low, high]

    # The stream is younger than its retention period, so its trim horizon is its creation,
    # when only the parent was open. The KCL starts from exactly this list when it begins
    # at TRIM_HORIZON, then follows ChildShards.
    horizon = kinesis.list_shards(StreamName=stream, ShardFilter={"Type": "AT_TRIM_HORIZON"})[
        "Shards"
    ]
    assert _ids(horizon) == [parent]


def test_split_shard_rejects_bad_hash_key(kinesis, stream):
    for bad in ("0", "1", str(MAX_HASH_KEY + 1)):
        expect_error(
            "InvalidArgumentException",
            kinesis.split_shard,
            StreamName=stream,
            ShardToSplit="shardId-000000000000",
            NewStartingHashKey=bad,
        )
    expect_error(
        "ResourceNotFoundException",
        kinesis.split_shard,
        StreamName=stream,
        ShardToSplit="shardId-000000000099",
        NewStartingHashKey=str(HALF),
    )
    assert len(open_shards(describe(kinesis, stream)["Shards"])) == 1


def test_merge_shards(kinesis, make_stream):
    name = make_stream("merge", shards=2)
    shards = describe(kinesis, name)["Shards"]
    first, second = shards
    key_a = _key_in(0, int(first["HashKeyRange"]["EndingHashKey"]), "a")
    key_b = _key_in(int(second["HashKeyRange"]["StartingHashKey"]), MAX_HASH_KEY, "b")
    put_a = kinesis.put_record(StreamName=name, Data=b"in-first", PartitionKey=key_a)
    put_b = kinesis.put_record(StreamName=name, Data=b"in-second", PartitionKey=key_b)
    assert (put_a["ShardId"], put_b["ShardId"]) == (first["ShardId"], second["ShardId"])

    kinesis.merge_shards(
        StreamName=name, ShardToMerge=first["ShardId"], AdjacentShardToMerge=second["ShardId"]
    )
    wait_active(kinesis, name)

    shards = describe(kinesis, name)["Shards"]
    assert len(shards) == 3
    child = shards[2]
    assert child["ShardId"] == "shardId-000000000002"
    assert child["ParentShardId"] == first["ShardId"]
    assert child["AdjacentParentShardId"] == second["ShardId"]
    assert child["HashKeyRange"] == {"StartingHashKey": "0", "EndingHashKey": str(MAX_HASH_KEY)}
    for parent in shards[:2]:
        assert "EndingSequenceNumber" in parent["SequenceNumberRange"]

    for parent, put in ((first, put_a), (second, put_b)):
        records, last = read_from(kinesis, name, parent["ShardId"])
        assert [r["SequenceNumber"] for r in records] == [put["SequenceNumber"]]
        assert not last.get("NextShardIterator")
        assert [c["ShardId"] for c in last["ChildShards"]] == [child["ShardId"]]
        assert sorted(last["ChildShards"][0]["ParentShards"]) == [
            first["ShardId"],
            second["ShardId"],
        ]

    put = kinesis.put_record(StreamName=name, Data=b"merged", PartitionKey=key_a)
    assert put["ShardId"] == child["ShardId"]
    records, _ = read_from(kinesis, name, child["ShardId"])
    assert [r["Data"] for r in records] == [b"merged"]


def test_merge_non_adjacent_shards_is_rejected(kinesis, make_stream):
    name = make_stream("merge-bad", shards=3)
    expect_error(
        "InvalidArgumentException",
        kinesis.merge_shards,
        StreamName=name,
        ShardToMerge="shardId-000000000000",
        AdjacentShardToMerge="shardId-000000000002",
    )
    assert len(open_shards(describe(kinesis, name)["Shards"])) == 3


def test_update_shard_count(kinesis, make_stream):
    name = make_stream("scale", shards=2)
    response = kinesis.update_shard_count(
        StreamName=name, TargetShardCount=4, ScalingType="UNIFORM_SCALING"
    )
    assert response["StreamName"] == name
    assert response["CurrentShardCount"] == 2
    assert response["TargetShardCount"] == 4
    wait_active(kinesis, name)

    shards = all_shards(kinesis, name)
    assert len(open_shards(shards)) == 4
    assert_covers_key_space(shards)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 4

    put = kinesis.put_records(
        StreamName=name,
        Records=[{"Data": f"{i}".encode(), "PartitionKey": f"p{i}"} for i in range(20)],
    )
    assert put["FailedRecordCount"] == 0
    for i, result in enumerate(put["Records"]):
        assert result["ShardId"] == shard_for(shards, hash_key(f"p{i}"))

    response = kinesis.update_shard_count(
        StreamName=name, TargetShardCount=2, ScalingType="UNIFORM_SCALING"
    )
    assert response["CurrentShardCount"] == 4
    wait_active(kinesis, name)
    shards = all_shards(kinesis, name)
    assert len(open_shards(shards)) == 2
    assert_covers_key_space(shards)


def test_list_shards_pagination(kinesis, make_stream):
    name = make_stream("listshards", shards=5)
    first = kinesis.list_shards(StreamName=name, MaxResults=2)
    assert _ids(first["Shards"]) == ["shardId-000000000000", "shardId-000000000001"]
    token = first["NextToken"]
    second = kinesis.list_shards(NextToken=token, MaxResults=2)
    assert _ids(second["Shards"]) == ["shardId-000000000002", "shardId-000000000003"]
    third = kinesis.list_shards(NextToken=second["NextToken"], MaxResults=2)
    assert _ids(third["Shards"]) == ["shardId-000000000004"]
    assert not third.get("NextToken")

    # A NextToken already names the stream: passing both is an error.
    expect_error(
        "InvalidArgumentException", kinesis.list_shards, StreamName=name, NextToken=token
    )

    paged = all_shards(kinesis, name, MaxResults=2)
    assert _ids(paged) == [f"shardId-{i:012d}" for i in range(5)]

    full = kinesis.list_shards(StreamName=name)["Shards"]
    assert len(full) == 5
    for shard in full:
        assert set(shard) >= {"ShardId", "HashKeyRange", "SequenceNumberRange"}
