"""CBOR 1.1 requests shaped exactly as the AWS SDK for Java (and so the KCL) sends them.

The Java SDK encodes blobs as CBOR byte strings and timestamps as tag 1 over an integer
count of epoch *milliseconds* (not seconds, as RFC 8949 would have it), and it expects the
same in answers.
"""

from __future__ import annotations

import time

import cbor2

from support import CBOR_CONTENT_TYPE, TARGET_PREFIX, not_found_message, raw_request, unique_name


def _keep_tag_1(value, _immutable):
    # Keep epoch-time tags as they came, so the test sees the raw encoding.
    return cbor2.CBORTag(1, value)


def cbor_call(endpoint, operation: str, payload: dict, expect_status: int = 200):
    response = raw_request(
        endpoint, TARGET_PREFIX + operation, cbor2.dumps(payload), content_type=CBOR_CONTENT_TYPE
    )
    assert response.headers["content-type"].startswith(CBOR_CONTENT_TYPE)
    body = cbor2.loads(response.body, semantic_decoders={1: _keep_tag_1}) if response.body else {}
    assert response.status == expect_status, body
    return body


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _wait_active(endpoint, name):
    deadline = time.monotonic() + 15
    while True:
        summary = cbor_call(endpoint, "DescribeStreamSummary", {"StreamName": name})
        if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return summary
        assert time.monotonic() < deadline, "stream did not become ACTIVE"
        time.sleep(0.05)


def test_java_sdk_style_cbor_session(endpoint):
    name = unique_name("cbor")
    cbor_call(endpoint, "CreateStream", {"StreamName": name, "ShardCount": 1})
    try:
        summary = _wait_active(endpoint, name)
        created = summary["StreamDescriptionSummary"]["StreamCreationTimestamp"]
        assert isinstance(created, cbor2.CBORTag) and created.tag == 1
        assert abs(created.value - _now_ms()) < 120_000, "creation time must be in milliseconds"

        one_minute_ago = cbor2.CBORTag(1, _now_ms() - 60_000)
        before_put = _now_ms()

        put = cbor_call(
            endpoint,
            "PutRecord",
            {"StreamName": name, "Data": b"\x00\x01binary\xff", "PartitionKey": "pk-1"},
        )
        assert put["ShardId"] == "shardId-000000000000"
        assert isinstance(put["SequenceNumber"], str) and put["SequenceNumber"].isdigit()

        batch = cbor_call(
            endpoint,
            "PutRecords",
            {
                "StreamName": name,
                "Records": [
                    {"Data": b"second", "PartitionKey": "pk-2"},
                    {"Data": b"third", "PartitionKey": "pk-3", "ExplicitHashKey": "12345"},
                ],
            },
        )
        assert batch["FailedRecordCount"] == 0
        sequence = [put["SequenceNumber"]] + [r["SequenceNumber"] for r in batch["Records"]]
        after_put = _now_ms()

        # AT_TIMESTAMP one minute ago (tag 1 over integer milliseconds) sees all three records.
        iterator = cbor_call(
            endpoint,
            "GetShardIterator",
            {
                "StreamName": name,
                "ShardId": "shardId-000000000000",
                "ShardIteratorType": "AT_TIMESTAMP",
                "Timestamp": one_minute_ago,
            },
        )["ShardIterator"]
        got = cbor_call(endpoint, "GetRecords", {"ShardIterator": iterator, "Limit": 100})
        records = got["Records"]
        assert [r["SequenceNumber"] for r in records] == sequence
        assert [r["Data"] for r in records] == [b"\x00\x01binary\xff", b"second", b"third"]
        assert [r["PartitionKey"] for r in records] == ["pk-1", "pk-2", "pk-3"]
        assert isinstance(records[0]["Data"], bytes), "blobs travel as CBOR byte strings"
        for record in records:
            arrival = record["ApproximateArrivalTimestamp"]
            assert isinstance(arrival, cbor2.CBORTag), arrival
            assert arrival.tag == 1
            assert isinstance(arrival.value, int), "Java expects integer milliseconds"
            assert before_put - 1_000 <= arrival.value <= after_put + 1_000, (
                arrival.value,
                before_put,
            )
        assert got["MillisBehindLatest"] == 0
        assert isinstance(got["NextShardIterator"], str)

        # AT_TIMESTAMP at a record's own arrival time includes that record and what follows.
        last_arrival = records[-1]["ApproximateArrivalTimestamp"].value
        iterator = cbor_call(
            endpoint,
            "GetShardIterator",
            {
                "StreamName": name,
                "ShardId": "shardId-000000000000",
                "ShardIteratorType": "AT_TIMESTAMP",
                "Timestamp": cbor2.CBORTag(1, last_arrival),
            },
        )["ShardIterator"]
        got = cbor_call(endpoint, "GetRecords", {"ShardIterator": iterator})
        assert sequence[-1] in [r["SequenceNumber"] for r in got["Records"]]
        assert all(
            r["ApproximateArrivalTimestamp"].value >= last_arrival for r in got["Records"]
        )

        # One minute in the future is refused, as Kinesis does (so it was read as milliseconds:
        # as seconds it would be a date long past).
        error = cbor_call(
            endpoint,
            "GetShardIterator",
            {
                "StreamName": name,
                "ShardId": "shardId-000000000000",
                "ShardIteratorType": "AT_TIMESTAMP",
                "Timestamp": cbor2.CBORTag(1, _now_ms() + 60_000),
            },
            expect_status=400,
        )
        assert error["__type"] == "InvalidArgumentException", error

        shards = cbor_call(endpoint, "ListShards", {"StreamName": name})["Shards"]
        assert [s["ShardId"] for s in shards] == ["shardId-000000000000"]
        assert shards[0]["HashKeyRange"]["StartingHashKey"] == "0"
    finally:
        cbor_call(endpoint, "DeleteStream", {"StreamName": name})


def test_cbor_errors_are_cbor_maps(endpoint):
    name = unique_name("cbor-missing")
    body = cbor_call(endpoint, "DescribeStream", {"StreamName": name}, expect_status=400)
    assert body == {"__type": "ResourceNotFoundException", "message": not_found_message(name)}

    response = raw_request(
        endpoint,
        TARGET_PREFIX + "ListStreams",
        b"\xbf\x61",  # truncated CBOR
        content_type=CBOR_CONTENT_TYPE,
    )
    assert response.status == 400
    assert response.headers["content-type"].startswith(CBOR_CONTENT_TYPE)
    error = cbor2.loads(response.body)
    assert error["__type"].split("#")[-1] == "SerializationException"
