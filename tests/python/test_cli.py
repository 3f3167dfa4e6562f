"""The AWS CLI (v1), run as a user runs it: a stream's whole life through `aws kinesis`."""

from __future__ import annotations

import base64

import pytest

from support import aws_cli_runner, cli_json, stream_arn, unique_name


@pytest.fixture(scope="module")
def aws(server, tmp_path_factory):
    """Runs `aws kinesis <args>` against the server; returns the completed process."""
    return aws_cli_runner(server.endpoint, tmp_path_factory.mktemp("aws-cli-home"))


ok = cli_json


def test_stream_life_cycle_through_the_cli(aws):
    name = unique_name("cli")

    assert ok(aws("create-stream", "--stream-name", name, "--shard-count", "1")) == {}
    ok(aws("wait", "stream-exists", "--stream-name", name))

    # CLI v1 sends a blob argument's text as the raw bytes (v2 would want base64 or
    # `--cli-binary-format raw-in-base64-out`, an option v1 does not have).
    put = ok(
        aws(
            "put-record",
            "--stream-name",
            name,
            "--partition-key",
            "user-1",
            "--data",
            "hello from the cli",
        )
    )
    assert put["ShardId"] == "shardId-000000000000"
    assert put["SequenceNumber"].isdigit() and len(put["SequenceNumber"]) == 56

    iterator = ok(
        aws(
            "get-shard-iterator",
            "--stream-name",
            name,
            "--shard-id",
            put["ShardId"],
            "--shard-iterator-type",
            "TRIM_HORIZON",
        )
    )["ShardIterator"]
    records = ok(aws("get-records", "--shard-iterator", iterator))
    assert [r["SequenceNumber"] for r in records["Records"]] == [put["SequenceNumber"]]
    record = records["Records"][0]
    # The CLI prints blobs base64-encoded.
    assert base64.b64decode(record["Data"]) == b"hello from the cli"
    assert record["PartitionKey"] == "user-1"
    assert records["NextShardIterator"]

    listed = ok(aws("list-streams"))
    assert name in listed["StreamNames"]
    assert any(s["StreamName"] == name for s in listed["StreamSummaries"])

    summary = ok(aws("describe-stream-summary", "--stream-name", name))[
        "StreamDescriptionSummary"
    ]
    assert summary["StreamName"] == name
    assert summary["StreamARN"] == stream_arn(name)
    assert summary["StreamStatus"] == "ACTIVE"
    assert summary["OpenShardCount"] == 1
    assert summary["RetentionPeriodHours"] == 24

    assert ok(aws("delete-stream", "--stream-name", name)) == {}
    ok(aws("wait", "stream-not-exists", "--stream-name", name))


def test_cli_reports_service_errors(aws):
    missing = unique_name("cli-missing")
    failed = aws("describe-stream", "--stream-name", missing)
    assert failed.returncode != 0
    assert failed.stdout == ""
    assert "ResourceNotFoundException" in failed.stderr
    assert "DescribeStream" in failed.stderr
    assert f"Stream {missing} under account 000000000000 not found." in failed.stderr

    failed = aws("put-record", "--stream-name", missing, "--partition-key", "k", "--data", "hi")
    assert failed.returncode != 0
    assert "ResourceNotFoundException" in failed.stderr
    assert "PutRecord" in failed.stderr
