"""Stream lifecycle and configuration through boto3, as an application would use them."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from botocore.exceptions import ClientError

from support import (
    ACCOUNT,
    REGION,
    all_shards,
    assert_covers_key_space,
    describe,
    expect_error,
    not_found_message,
    read_from,
    stream_arn,
    unique_name,
    wait_active,
    wait_gone,
)

SEQUENCE = re.compile(r"^\d{1,128}$")
ALL_SHARD_METRICS = {
    "IncomingBytes",
    "IncomingRecords",
    "OutgoingBytes",
    "OutgoingRecords",
    "WriteProvisionedThroughputExceeded",
    "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
}


def _recent(timestamp: dt.datetime, seconds: float = 300) -> bool:
    assert isinstance(timestamp, dt.datetime)
    assert timestamp.tzinfo is not None
    now = dt.datetime.now(dt.timezone.utc)
    return abs((now - timestamp).total_seconds()) < seconds


def test_create_provisioned_stream_and_describe(kinesis, make_stream):
    name = make_stream("prov", shards=3)
    desc = describe(kinesis, name)

    assert desc["StreamName"] == name
    assert desc["StreamARN"] == f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"
    assert desc["StreamStatus"] == "ACTIVE"
    assert desc["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert desc["RetentionPeriodHours"] == 24
    assert desc["HasMoreShards"] is False
    assert desc.get("EncryptionType", "NONE") == "NONE"
    assert desc["EnhancedMonitoring"] == [{"ShardLevelMetrics": []}]
    assert _recent(desc["StreamCreationTimestamp"])

    shards = desc["Shards"]
    assert [s["ShardId"] for s in shards] == [
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
    ]
    for shard in shards:
        assert "ParentShardId" not in shard
        assert SEQUENCE.match(shard["SequenceNumberRange"]["StartingSequenceNumber"])
        assert "EndingSequenceNumber" not in shard["SequenceNumberRange"]
    assert_covers_key_space(shards)
    widths = [
        int(s["HashKeyRange"]["EndingHashKey"]) - int(s["HashKeyRange"]["StartingHashKey"])
        for s in shards
    ]
    assert max(widths) - min(widths) <= len(shards), "shards should split the key space evenly"


def test_create_on_demand_stream(kinesis, make_stream):
    name = make_stream("ondemand", on_demand=True)
    desc = describe(kinesis, name)
    assert desc["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    shards = desc["Shards"]
    assert len(shards) == 4
    quarter = 2**126
    assert [
        (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in shards
    ] == [(i * quarter, (i + 1) * quarter - 1) for i in range(4)]

    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert summary["OpenShardCount"] == 4

    # An on-demand stream takes writes without any capacity planning.
    put = kinesis.put_record(StreamName=name, Data=b"on-demand", PartitionKey="pk")
    assert put["ShardId"] in {s["ShardId"] for s in shards}


def test_stream_status_goes_creating_to_active_and_waiters(kinesis):
    name = unique_name("wait")
    kinesis.create_stream(StreamName=name, ShardCount=2)
    try:
        status = describe(kinesis, name)["StreamStatus"]
        assert status in ("CREATING", "ACTIVE")
        wait_active(kinesis, name)
        assert describe(kinesis, name)["StreamStatus"] == "ACTIVE"
    finally:
        kinesis.delete_stream(StreamName=name)
    wait_gone(kinesis, name)
    message = expect_error("ResourceNotFoundException", kinesis.describe_stream, StreamName=name)
    assert message == not_found_message(name)


def test_describe_stream_summary(kinesis, make_stream):
    name = make_stream("summary", shards=2)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamName"] == name
    assert summary["StreamARN"] == stream_arn(name)
    assert summary["StreamStatus"] == "ACTIVE"
    assert summary["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert summary["RetentionPeriodHours"] == 24
    assert summary["OpenShardCount"] == 2
    assert summary["ConsumerCount"] == 0
    assert summary.get("EncryptionType", "NONE") == "NONE"
    assert summary["EnhancedMonitoring"] == [{"ShardLevelMetrics": []}]
    assert _recent(summary["StreamCreationTimestamp"])


def test_describe_stream_shard_pagination(kinesis, make_stream):
    name = make_stream("descpage", shards=5)
    first = kinesis.describe_stream(StreamName=name, Limit=2)["StreamDescription"]
    assert [s["ShardId"] for s in first["Shards"]] == [
        "shardId-000000000000",
        "shardId-000000000001",
    ]
    assert first["HasMoreShards"] is True
    second = kinesis.describe_stream(
        StreamName=name, Limit=2, ExclusiveStartShardId="shardId-000000000001"
    )["StreamDescription"]
    assert [s["ShardId"] for s in second["Shards"]] == [
        "shardId-000000000002",
        "shardId-000000000003",
    ]

    shard_ids = []
    for page in kinesis.get_paginator("describe_stream").paginate(
        StreamName=name, PaginationConfig={"PageSize": 2}
    ):
        shard_ids.extend(s["ShardId"] for s in page["StreamDescription"]["Shards"])
    assert shard_ids == [f"shardId-{i:012d}" for i in range(5)]


def test_list_streams_pagination_and_summaries(kinesis, make_stream):
    group = uuid.uuid4().hex[:8]
    ours = [make_stream(name=f"list-{group}-{i}", shards=1) for i in range(3)]

    seen: list[str] = []
    summaries: dict[str, dict] = {}
    response = kinesis.list_streams(Limit=2)
    pages = 1
    while True:
        assert len(response["StreamNames"]) <= 2
        seen.extend(response["StreamNames"])
        for summary in response.get("StreamSummaries", []):
            summaries[summary["StreamName"]] = summary
        if not response["HasMoreStreams"]:
            break
        assert response.get("NextToken"), "HasMoreStreams without a NextToken"
        response = kinesis.list_streams(Limit=2, NextToken=response["NextToken"])
        pages += 1
        assert pages < 500
    assert len(seen) == len(set(seen)), "a stream was listed twice"
    assert seen == sorted(seen), "streams are listed in name order"
    assert set(ours) <= set(seen)
    assert pages >= 2

    for name in ours:
        summary = summaries[name]
        assert summary["StreamARN"] == stream_arn(name)
        assert summary["StreamStatus"] == "ACTIVE"
        assert summary["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
        assert _recent(summary["StreamCreationTimestamp"])

    after_first = kinesis.list_streams(ExclusiveStartStreamName=ours[0], Limit=1)
    assert after_first["StreamNames"] == [ours[1]]
    assert after_first["HasMoreStreams"] is True

    paginated = []
    for page in kinesis.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 2}):
        paginated.extend(page["StreamNames"])
    assert set(ours) <= set(paginated)
    assert len(paginated) == len(set(paginated))


def test_stream_arn_in_place_of_stream_name(kinesis, make_stream):
    name = make_stream("byarn", shards=1)
    arn = stream_arn(name)

    assert kinesis.describe_stream(StreamARN=arn)["StreamDescription"]["StreamName"] == name
    summary = kinesis.describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]
    assert summary["StreamName"] == name
    shards = kinesis.list_shards(StreamARN=arn)["Shards"]
    assert [s["ShardId"] for s in shards] == ["shardId-000000000000"]

    put = kinesis.put_record(StreamARN=arn, Data=b"via-arn", PartitionKey="a")
    batch = kinesis.put_records(
        StreamARN=arn, Records=[{"Data": b"batch-via-arn", "PartitionKey": "b"}]
    )
    assert batch["FailedRecordCount"] == 0
    iterator = kinesis.get_shard_iterator(
        StreamARN=arn, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = kinesis.get_records(StreamARN=arn, ShardIterator=iterator)["Records"]
    assert [r["Data"] for r in records] == [b"via-arn", b"batch-via-arn"]
    assert records[0]["SequenceNumber"] == put["SequenceNumber"]

    kinesis.add_tags_to_stream(StreamARN=arn, Tags={"via": "arn"})
    tags = kinesis.list_tags_for_stream(StreamARN=arn)["Tags"]
    assert {"Key": "via", "Value": "arn"} in tags
    kinesis.increase_stream_retention_period(StreamARN=arn, RetentionPeriodHours=36)
    assert describe(kinesis, name)["RetentionPeriodHours"] == 36

    kinesis.delete_stream(StreamARN=arn)
    wait_gone(kinesis, name)
    expect_error("ResourceNotFoundException", kinesis.describe_stream, StreamARN=arn)


def test_retention_increase_and_decrease(kinesis, stream):
    kinesis.increase_stream_retention_period(StreamName=stream, RetentionPeriodHours=48)
    assert describe(kinesis, stream)["RetentionPeriodHours"] == 48
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    assert summary["RetentionPeriodHours"] == 48

    # Increase must not shorten, decrease must not lengthen.
    expect_error(
        "InvalidArgumentException",
        kinesis.increase_stream_retention_period,
        StreamName=stream,
        RetentionPeriodHours=24,
    )
    expect_error(
        "InvalidArgumentException",
        kinesis.decrease_stream_retention_period,
        StreamName=stream,
        RetentionPeriodHours=72,
    )
    # Bounds: 24 hours to 365 days.
    expect_error(
        "InvalidArgumentException",
        kinesis.increase_stream_retention_period,
        StreamName=stream,
        RetentionPeriodHours=8761,
    )

    kinesis.decrease_stream_retention_period(StreamName=stream, RetentionPeriodHours=24)
    assert describe(kinesis, stream)["RetentionPeriodHours"] == 24
    expect_error(
        "InvalidArgumentException",
        kinesis.decrease_stream_retention_period,
        StreamName=stream,
        RetentionPeriodHours=12,
    )
    assert describe(kinesis, stream)["RetentionPeriodHours"] == 24


def test_stream_tags(kinesis, stream):
    kinesis.add_tags_to_stream(StreamName=stream, Tags={"env": "test", "owner": "data", "tier": "1"})
    listed = kinesis.list_tags_for_stream(StreamName=stream)
    assert {t["Key"]: t["Value"] for t in listed["Tags"]} == {
        "env": "test",
        "owner": "data",
        "tier": "1",
    }
    assert listed["HasMoreTags"] is False

    first = kinesis.list_tags_for_stream(StreamName=stream, Limit=1)
    assert len(first["Tags"]) == 1
    assert first["HasMoreTags"] is True
    rest = kinesis.list_tags_for_stream(
        StreamName=stream, ExclusiveStartTagKey=first["Tags"][0]["Key"]
    )
    assert len(rest["Tags"]) == 2
    assert rest["HasMoreTags"] is False

    # Overwrite one value, remove one key.
    kinesis.add_tags_to_stream(StreamName=stream, Tags={"env": "prod"})
    kinesis.remove_tags_from_stream(StreamName=stream, TagKeys=["owner"])
    listed = kinesis.list_tags_for_stream(StreamName=stream)
    assert {t["Key"]: t["Value"] for t in listed["Tags"]} == {"env": "prod", "tier": "1"}


def test_resource_tags_by_arn(kinesis, stream):
    arn = stream_arn(stream)
    kinesis.tag_resource(ResourceARN=arn, Tags={"team": "ingest", "cost": "42"})
    tags = kinesis.list_tags_for_resource(ResourceARN=arn)["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == {"team": "ingest", "cost": "42"}
    # The same tags are visible through the stream-level API.
    stream_tags = kinesis.list_tags_for_stream(StreamName=stream)["Tags"]
    assert {t["Key"]: t["Value"] for t in stream_tags} == {"team": "ingest", "cost": "42"}

    kinesis.untag_resource(ResourceARN=arn, TagKeys=["cost"])
    tags = kinesis.list_tags_for_resource(ResourceARN=arn)["Tags"]
    assert tags == [{"Key": "team", "Value": "ingest"}]

    missing = stream_arn(unique_name("missing"))
    expect_error("ResourceNotFoundException", kinesis.list_tags_for_resource, ResourceARN=missing)


def test_create_stream_with_tags(kinesis, make_stream):
    name = make_stream("tagged", shards=1, Tags={"created-with": "tags"})
    tags = kinesis.list_tags_for_stream(StreamName=name)["Tags"]
    assert tags == [{"Key": "created-with", "Value": "tags"}]


def test_enhanced_monitoring(kinesis, stream):
    enabled = kinesis.enable_enhanced_monitoring(
        StreamName=stream, ShardLevelMetrics=["IncomingBytes", "OutgoingRecords"]
    )
    assert enabled["StreamName"] == stream
    assert enabled["CurrentShardLevelMetrics"] == []
    assert set(enabled["DesiredShardLevelMetrics"]) == {"IncomingBytes", "OutgoingRecords"}
    monitoring = describe(kinesis, stream)["EnhancedMonitoring"]
    assert set(monitoring[0]["ShardLevelMetrics"]) == {"IncomingBytes", "OutgoingRecords"}

    disabled = kinesis.disable_enhanced_monitoring(
        StreamName=stream, ShardLevelMetrics=["IncomingBytes"]
    )
    assert set(disabled["CurrentShardLevelMetrics"]) == {"IncomingBytes", "OutgoingRecords"}
    assert disabled["DesiredShardLevelMetrics"] == ["OutgoingRecords"]

    everything = kinesis.enable_enhanced_monitoring(StreamName=stream, ShardLevelMetrics=["ALL"])
    assert set(everything["DesiredShardLevelMetrics"]) == ALL_SHARD_METRICS
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    assert set(summary["EnhancedMonitoring"][0]["ShardLevelMetrics"]) == ALL_SHARD_METRICS

    none = kinesis.disable_enhanced_monitoring(StreamName=stream, ShardLevelMetrics=["ALL"])
    assert none["DesiredShardLevelMetrics"] == []
    assert describe(kinesis, stream)["EnhancedMonitoring"] == [{"ShardLevelMetrics": []}]


def test_update_stream_mode(kinesis, make_stream):
    name = make_stream("mode", shards=2)
    arn = stream_arn(name)
    kinesis.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    wait_active(kinesis, name)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}

    kinesis.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "PROVISIONED"})
    wait_active(kinesis, name)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert summary["OpenShardCount"] >= 2
    kinesis.put_record(StreamName=name, Data=b"still-writable", PartitionKey="k")


def test_describe_limits(kinesis, make_stream):
    make_stream("limits", shards=3)
    make_stream("limits-od", on_demand=True)
    limits = kinesis.describe_limits()
    assert limits["ShardLimit"] >= limits["OpenShardCount"] >= 7
    assert limits["OnDemandStreamCountLimit"] >= limits["OnDemandStreamCount"] >= 1


def test_delete_stream_and_recreate_same_name(kinesis, make_stream):
    name = make_stream("recreate", shards=1)
    kinesis.put_record(StreamName=name, Data=b"old incarnation", PartitionKey="k")

    kinesis.delete_stream(StreamName=name)
    try:
        status = describe(kinesis, name)["StreamStatus"]
    except ClientError as error:  # already gone: also fine
        assert error.response["Error"]["Code"] == "ResourceNotFoundException"
    else:
        assert status == "DELETING"
    wait_gone(kinesis, name)
    listed = [
        n for page in kinesis.get_paginator("list_streams").paginate() for n in page["StreamNames"]
    ]
    assert name not in listed
    expect_error("ResourceNotFoundException", kinesis.delete_stream, StreamName=name)

    kinesis.create_stream(StreamName=name, ShardCount=1)
    wait_active(kinesis, name)
    records, _ = read_from(kinesis, name, "shardId-000000000000")
    assert records == [], "a recreated stream must start empty"
    assert all_shards(kinesis, name)[0]["ShardId"] == "shardId-000000000000"
