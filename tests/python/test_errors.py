"""Error answers: what boto3 users see, and what the wire carries for bad requests."""

from __future__ import annotations

import json

import pytest

from support import (
    ACCOUNT,
    JSON_CONTENT_TYPE,
    TARGET_PREFIX,
    describe,
    expect_error,
    not_found_message,
    raw_request,
    unique_name,
)

BAD_NAME_MESSAGE = (
    "1 validation error detected: Value 'bad name!' at 'streamName' failed to satisfy "
    "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
)


def test_missing_stream_is_resource_not_found(kinesis):
    name = unique_name("absent")
    message = expect_error("ResourceNotFoundException", kinesis.describe_stream, StreamName=name)
    assert message == not_found_message(name)
    message = expect_error(
        "ResourceNotFoundException", kinesis.describe_stream_summary, StreamName=name
    )
    assert message == not_found_message(name)
    for call, kwargs in [
        (kinesis.delete_stream, {}),
        (kinesis.list_shards, {}),
        (kinesis.put_record, {"Data": b"x", "PartitionKey": "k"}),
        (kinesis.put_records, {"Records": [{"Data": b"x", "PartitionKey": "k"}]}),
        (
            kinesis.get_shard_iterator,
            {"ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"},
        ),
        (kinesis.add_tags_to_stream, {"Tags": {"a": "b"}}),
        (kinesis.increase_stream_retention_period, {"RetentionPeriodHours": 48}),
    ]:
        message = expect_error("ResourceNotFoundException", call, StreamName=name, **kwargs)
        assert name in message and ACCOUNT in message, message


def test_create_existing_stream_is_resource_in_use(kinesis, stream):
    message = expect_error(
        "ResourceInUseException", kinesis.create_stream, StreamName=stream, ShardCount=1
    )
    assert stream in message
    assert "already exists" in message
    assert describe(kinesis, stream)["StreamStatus"] == "ACTIVE"


def test_bad_stream_name_is_validation_error(kinesis):
    message = expect_error(
        "ValidationException", kinesis.create_stream, StreamName="bad name!", ShardCount=1
    )
    assert message == BAD_NAME_MESSAGE
    message = expect_error("ValidationException", kinesis.describe_stream, StreamName="bad name!")
    assert message == BAD_NAME_MESSAGE

    too_long = "a" * 129
    message = expect_error(
        "ValidationException", kinesis.create_stream, StreamName=too_long, ShardCount=1
    )
    assert message == (
        f"1 validation error detected: Value '{too_long}' at 'streamName' failed to satisfy "
        "constraint: Member must have length less than or equal to 128"
    )


def test_several_validation_errors_are_counted(kinesis_unvalidated):
    message = expect_error(
        "ValidationException",
        kinesis_unvalidated.create_stream,
        StreamName="bad name!",
        ShardCount=0,
    )
    assert message.startswith("2 validation errors detected: ")
    assert (
        "Value 'bad name!' at 'streamName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
    ) in message
    assert (
        "Value '0' at 'shardCount' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1"
    ) in message
    assert "; " in message


def test_put_records_validation_names_the_member(kinesis, stream):
    records = [{"Data": b"ok", "PartitionKey": "k"} for _ in range(3)]
    records[2] = {"Data": b"bad", "PartitionKey": "p" * 257}
    message = expect_error("ValidationException", kinesis.put_records, StreamName=stream, Records=records)
    assert message.startswith("1 validation error detected: ")
    assert "at 'records.3.member.partitionKey' failed to satisfy constraint: " in message
    assert "Member must have length less than or equal to 256" in message

    too_many = [{"Data": b"x", "PartitionKey": "k"}] * 501
    message = expect_error("ValidationException", kinesis.put_records, StreamName=stream, Records=too_many)
    assert "at 'records' failed to satisfy constraint: " in message
    assert "Member must have length less than or equal to 500" in message


def test_oversize_record_is_rejected(kinesis, stream):
    message = expect_error(
        "ValidationException",
        kinesis.put_record,
        StreamName=stream,
        Data=b"x" * (1024 * 1024 + 1),
        PartitionKey="k",
    )
    assert "at 'data' failed to satisfy constraint: " in message
    assert "Member must have length less than or equal to " in message


def test_get_records_limit_out_of_range(kinesis, stream):
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    message = expect_error("ValidationException", kinesis.get_records, ShardIterator=iterator, Limit=10001)
    assert message == (
        "1 validation error detected: Value '10001' at 'limit' failed to satisfy constraint: "
        "Member must have value less than or equal to 10000"
    )


def test_bad_iterators_are_invalid_arguments(kinesis, stream):
    expect_error("InvalidArgumentException", kinesis.get_records, ShardIterator="not-an-iterator")
    expect_error(
        "InvalidArgumentException",
        kinesis.get_records,
        ShardIterator="AAAAAAAAAAF2pIk6t0J8TlZ8Wj8ixuFjVxvq4Hzk0tpwVmjo7bGspV8YTRnXXHVQfAB0JgUs",
    )
    expect_error(
        "InvalidArgumentException",
        kinesis.get_shard_iterator,
        StreamName=stream,
        ShardId="shardId-000000000000",
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber="999999999999999999999999999999999999999999999999999999999",
    )
    expect_error(
        "ResourceNotFoundException",
        kinesis.get_shard_iterator,
        StreamName=stream,
        ShardId="shardId-000000000042",
        ShardIteratorType="TRIM_HORIZON",
    )


def test_out_of_range_explicit_hash_key(kinesis, stream):
    message = expect_error(
        "InvalidArgumentException",
        kinesis.put_record,
        StreamName=stream,
        Data=b"x",
        PartitionKey="k",
        ExplicitHashKey=str(2**128),
    )
    assert "ExplicitHashKey" in message


# --- raw HTTP: what SDKs never send, but the server must still answer properly ---


def _json_call(endpoint, operation, body: bytes):
    return raw_request(endpoint, TARGET_PREFIX + operation, body)


def test_malformed_json_is_serialization_exception(endpoint):
    response = _json_call(endpoint, "ListStreams", b'{"Limit": 5,')
    assert response.status == 400
    assert response.headers["content-type"].startswith(JSON_CONTENT_TYPE)
    assert response.headers.get("x-amzn-requestid")
    body = response.json()
    assert body["__type"].split("#")[-1] == "SerializationException"
    assert "message" not in body, "SerializationException spells the field 'Message'"


def test_wrong_json_type_is_serialization_exception(endpoint):
    response = _json_call(endpoint, "DescribeStream", json.dumps({"StreamName": 5}).encode())
    assert response.status == 400
    assert response.json()["__type"].split("#")[-1] == "SerializationException"


def test_unknown_operation(endpoint):
    response = _json_call(endpoint, "FlushEverything", b"{}")
    assert response.status == 400
    assert response.json()["__type"].split("#")[-1] == "UnknownOperationException"

    response = raw_request(endpoint, "SomeOtherService_20200101.ListStreams", b"{}")
    assert response.status == 400
    assert response.json()["__type"].split("#")[-1] == "UnknownOperationException"


def test_missing_required_member(endpoint, stream):
    response = _json_call(
        endpoint,
        "GetShardIterator",
        json.dumps({"StreamName": stream, "ShardId": "shardId-000000000000"}).encode(),
    )
    assert response.status == 400
    body = response.json()
    assert body["__type"].split("#")[-1] == "ValidationException"
    assert body["message"] == (
        "1 validation error detected: Value null at 'shardIteratorType' failed to satisfy "
        "constraint: Member must not be null"
    )


def test_bad_enum_value(endpoint, stream):
    response = _json_call(
        endpoint,
        "GetShardIterator",
        json.dumps(
            {
                "StreamName": stream,
                "ShardId": "shardId-000000000000",
                "ShardIteratorType": "SOMEWHERE",
            }
        ).encode(),
    )
    assert response.status == 400
    body = response.json()
    assert body["__type"].split("#")[-1] == "ValidationException"
    assert body["message"].startswith(
        "1 validation error detected: Value 'SOMEWHERE' at 'shardIteratorType' failed to "
        "satisfy constraint: Member must satisfy enum value set: ["
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'"just a string"',
        b"\xff\xfe\x00garbage",
        b'{"Records": "nope", "StreamName": "x"}',
        b'{"Records": [{"Data": "!!!not base64!!!", "PartitionKey": "k"}], "StreamName": "x"}',
        b'{"Records": [null], "StreamName": "x"}',
    ],
)
def test_garbage_bodies_get_a_400_and_do_not_hurt_the_server(endpoint, body):
    response = _json_call(endpoint, "PutRecords", body)
    assert response.status == 400, response.body
    error_type = response.json()["__type"].split("#")[-1]
    assert error_type in ("SerializationException", "ValidationException"), response.body
    # The server is still healthy afterwards.
    assert _json_call(endpoint, "ListStreams", b"{}").status == 200


def test_raw_resource_not_found_body(endpoint):
    name = unique_name("raw-missing")
    response = _json_call(endpoint, "DescribeStream", json.dumps({"StreamName": name}).encode())
    assert response.status == 400
    assert response.json() == {
        "__type": "ResourceNotFoundException",
        "message": not_found_message(name),
    }
