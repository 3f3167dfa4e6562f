"""Server-side encryption through boto3: StartStreamEncryption, DescribeStream(Summary),
StopStreamEncryption, and the errors AWS answers for bad requests."""

from __future__ import annotations

from support import (
    ACCOUNT,
    REGION,
    describe,
    expect_error,
    not_found_message,
    read_from,
    stream_arn,
    unique_name,
    wait_active,
)

KINESIS_KEY = "alias/aws/kinesis"


def _encryption(kinesis, name: str) -> tuple[str, str | None]:
    full = describe(kinesis, name)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert (full["EncryptionType"], full.get("KeyId")) == (
        summary["EncryptionType"],
        summary.get("KeyId"),
    )
    return full["EncryptionType"], full.get("KeyId")


def test_start_describe_and_stop_encryption(kinesis, stream):
    assert _encryption(kinesis, stream) == ("NONE", None)
    kinesis.put_record(StreamName=stream, PartitionKey="k", Data=b"before")

    kinesis.start_stream_encryption(StreamName=stream, EncryptionType="KMS", KeyId=KINESIS_KEY)
    wait_active(kinesis, stream)
    assert _encryption(kinesis, stream) == ("KMS", KINESIS_KEY)
    kinesis.put_record(StreamName=stream, PartitionKey="k", Data=b"during")

    kinesis.stop_stream_encryption(StreamName=stream, EncryptionType="KMS", KeyId=KINESIS_KEY)
    wait_active(kinesis, stream)
    assert _encryption(kinesis, stream) == ("NONE", None)
    kinesis.put_record(StreamName=stream, PartitionKey="k", Data=b"after")

    shard = describe(kinesis, stream)["Shards"][0]["ShardId"]
    records, _ = read_from(kinesis, stream, shard)
    assert [r["Data"] for r in records] == [b"before", b"during", b"after"]


def test_start_encryption_by_stream_arn_and_key_arn(kinesis, stream):
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:{KINESIS_KEY}"
    kinesis.start_stream_encryption(
        StreamARN=stream_arn(stream), EncryptionType="KMS", KeyId=alias_arn
    )
    wait_active(kinesis, stream)
    assert _encryption(kinesis, stream) == ("KMS", alias_arn)
    # Stopping accepts the same key named another way.
    kinesis.stop_stream_encryption(StreamName=stream, EncryptionType="KMS", KeyId=KINESIS_KEY)
    wait_active(kinesis, stream)
    assert _encryption(kinesis, stream) == ("NONE", None)


def test_unknown_keys_are_kms_not_found(kinesis, stream):
    message = expect_error(
        "KMSNotFoundException",
        kinesis.start_stream_encryption,
        StreamName=stream,
        EncryptionType="KMS",
        KeyId="alias/no-such-key",
    )
    assert message == f"Alias arn:aws:kms:{REGION}:{ACCOUNT}:alias/no-such-key is not found."
    key_id = "0f0f0f0f-1111-4222-8333-444444444444"
    message = expect_error(
        "KMSNotFoundException",
        kinesis.start_stream_encryption,
        StreamName=stream,
        EncryptionType="KMS",
        KeyId=key_id,
    )
    assert message == f"Key 'arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}' does not exist"
    assert _encryption(kinesis, stream) == ("NONE", None)
    assert describe(kinesis, stream)["StreamStatus"] == "ACTIVE"


def test_bad_requests(kinesis, stream):
    for call in (kinesis.start_stream_encryption, kinesis.stop_stream_encryption):
        expect_error(
            "InvalidArgumentException",
            call,
            StreamName=stream,
            EncryptionType="NONE",
            KeyId=KINESIS_KEY,
        )
    absent = unique_name("absent")
    message = expect_error(
        "ResourceNotFoundException",
        kinesis.start_stream_encryption,
        StreamName=absent,
        EncryptionType="KMS",
        KeyId=KINESIS_KEY,
    )
    assert message == not_found_message(absent)
    kinesis.start_stream_encryption(StreamName=stream, EncryptionType="KMS", KeyId=KINESIS_KEY)
    wait_active(kinesis, stream)
    # Stopping with a key other than the stream's is refused.
    expect_error(
        "InvalidArgumentException",
        kinesis.stop_stream_encryption,
        StreamName=stream,
        EncryptionType="KMS",
        KeyId="alias/some-other-key",
    )
    assert _encryption(kinesis, stream) == ("KMS", KINESIS_KEY)
