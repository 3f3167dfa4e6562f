"""Enhanced fan-out consumer registration through boto3."""

from __future__ import annotations

import datetime as dt
import re

from botocore.exceptions import ClientError

from support import describe, expect_error, poll, stream_arn, wait_gone


def _status(kinesis, consumer_arn):
    try:
        description = kinesis.describe_stream_consumer(ConsumerARN=consumer_arn)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise
    return description["ConsumerDescription"]["ConsumerStatus"]


def test_consumer_register_describe_list_deregister(kinesis, stream):
    arn = stream_arn(stream)
    registered = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="reader-1")
    consumer = registered["Consumer"]
    assert consumer["ConsumerName"] == "reader-1"
    assert consumer["ConsumerStatus"] in ("CREATING", "ACTIVE")
    assert isinstance(consumer["ConsumerCreationTimestamp"], dt.datetime)
    match = re.fullmatch(re.escape(arn) + r"/consumer/reader-1:(\d+)", consumer["ConsumerARN"])
    assert match, consumer["ConsumerARN"]
    consumer_arn = consumer["ConsumerARN"]

    poll(lambda: _status(kinesis, consumer_arn) == "ACTIVE", what="consumer ACTIVE")

    by_arn = kinesis.describe_stream_consumer(ConsumerARN=consumer_arn)["ConsumerDescription"]
    by_name = kinesis.describe_stream_consumer(StreamARN=arn, ConsumerName="reader-1")[
        "ConsumerDescription"
    ]
    assert by_arn == by_name
    assert by_arn["StreamARN"] == arn
    assert by_arn["ConsumerARN"] == consumer_arn
    assert by_arn["ConsumerStatus"] == "ACTIVE"

    listed = kinesis.list_stream_consumers(StreamARN=arn)["Consumers"]
    assert [c["ConsumerName"] for c in listed] == ["reader-1"]
    assert listed[0]["ConsumerARN"] == consumer_arn
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    assert summary["ConsumerCount"] == 1

    expect_error(
        "ResourceInUseException",
        kinesis.register_stream_consumer,
        StreamARN=arn,
        ConsumerName="reader-1",
    )
    expect_error(
        "ResourceNotFoundException",
        kinesis.describe_stream_consumer,
        StreamARN=arn,
        ConsumerName="nobody",
    )

    second = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="reader-2")["Consumer"]
    poll(lambda: _status(kinesis, second["ConsumerARN"]) == "ACTIVE", what="consumer ACTIVE")
    page = kinesis.list_stream_consumers(StreamARN=arn, MaxResults=1)
    assert len(page["Consumers"]) == 1
    rest = kinesis.list_stream_consumers(StreamARN=arn, NextToken=page["NextToken"])
    assert sorted(c["ConsumerName"] for c in page["Consumers"] + rest["Consumers"]) == [
        "reader-1",
        "reader-2",
    ]

    kinesis.deregister_stream_consumer(ConsumerARN=consumer_arn)
    poll(lambda: _status(kinesis, consumer_arn) is None, what="consumer gone")
    kinesis.deregister_stream_consumer(StreamARN=arn, ConsumerName="reader-2")
    poll(lambda: _status(kinesis, second["ConsumerARN"]) is None, what="consumer gone")
    poll(
        lambda: kinesis.list_stream_consumers(StreamARN=arn)["Consumers"] == [],
        what="no consumers listed",
    )


def test_delete_stream_with_consumers_needs_enforcement(kinesis, make_stream):
    name = make_stream("fanout", shards=1)
    arn = stream_arn(name)
    consumer = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="c")["Consumer"]
    poll(lambda: _status(kinesis, consumer["ConsumerARN"]) == "ACTIVE", what="consumer ACTIVE")

    expect_error("ResourceInUseException", kinesis.delete_stream, StreamName=name)
    assert describe(kinesis, name)["StreamStatus"] == "ACTIVE"

    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
    wait_gone(kinesis, name)
    expect_error("ResourceNotFoundException", kinesis.list_stream_consumers, StreamARN=arn)


def test_register_consumer_on_missing_stream(kinesis):
    expect_error(
        "ResourceNotFoundException",
        kinesis.register_stream_consumer,
        StreamARN=stream_arn("no-such-stream-for-consumers"),
        ConsumerName="c",
    )
