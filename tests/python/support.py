"""Shared helpers for the boto3 compatibility suites."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

ACCOUNT = "000000000000"
REGION = "us-east-1"
MAX_HASH_KEY = 2**128 - 1
TARGET_PREFIX = "Kinesis_20131202."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
CBOR_CONTENT_TYPE = "application/x-amz-cbor-1.1"

# Waiters poll quickly: streams turn ACTIVE within milliseconds here.
FAST_WAIT = {"Delay": 0.1, "MaxAttempts": 300}


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"


def not_found_message(name: str) -> str:
    return f"Stream {name} under account {ACCOUNT} not found."


def hash_key(partition_key: str) -> int:
    """The 128-bit hash key Kinesis derives from a partition key."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def shard_for(shards: list[dict], key: int) -> str:
    """The id of the open shard whose hash-key range holds `key`."""
    for shard in shards:
        if "EndingSequenceNumber" in shard.get("SequenceNumberRange", {}):
            continue
        low = int(shard["HashKeyRange"]["StartingHashKey"])
        high = int(shard["HashKeyRange"]["EndingHashKey"])
        if low <= key <= high:
            return shard["ShardId"]
    raise AssertionError(f"no open shard covers hash key {key}")


def open_shards(shards: list[dict]) -> list[dict]:
    return [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]


def assert_covers_key_space(shards: list[dict]) -> None:
    """Open shards must tile [0, 2^128-1] without gaps or overlaps."""
    ranges = sorted(
        (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in open_shards(shards)
    )
    assert ranges, "no open shards"
    assert ranges[0][0] == 0
    assert ranges[-1][1] == MAX_HASH_KEY
    for (_, prev_end), (start, end) in zip(ranges, ranges[1:]):
        assert start == prev_end + 1, f"gap or overlap at {prev_end}..{start}"
        assert start <= end


def wait_active(client, name: str) -> None:
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig=FAST_WAIT)


def wait_gone(client, name: str) -> None:
    client.get_waiter("stream_not_exists").wait(StreamName=name, WaiterConfig=FAST_WAIT)


def poll(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    """Call `predicate` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def describe(client, name: str) -> dict:
    return client.describe_stream(StreamName=name)["StreamDescription"]


def all_shards(client, name: str, **kwargs) -> list[dict]:
    """Every shard of a stream via ListShards, following NextToken.

    (boto3's own list_shards paginator resends StreamName with NextToken, which Kinesis
    rejects, so applications page by hand like this.)
    """
    response = client.list_shards(StreamName=name, **kwargs)
    shards = list(response["Shards"])
    while response.get("NextToken"):
        response = client.list_shards(NextToken=response["NextToken"])
        shards.extend(response["Shards"])
    return shards


def read_shard(client, iterator: str, *, limit: int | None = None, max_calls: int = 50):
    """Follow a shard iterator until it has caught up with the tip (or the shard ends).

    Returns (records, last GetRecords response).
    """
    records: list[dict] = []
    response: dict = {}
    for _ in range(max_calls):
        kwargs = {"ShardIterator": iterator}
        if limit is not None:
            kwargs["Limit"] = limit
        response = client.get_records(**kwargs)
        records.extend(response["Records"])
        iterator = response.get("NextShardIterator")
        if iterator is None:
            return records, response
        if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
            return records, response
    raise AssertionError(f"shard not drained after {max_calls} GetRecords calls")


def read_from(client, name: str, shard_id: str, iterator_type: str = "TRIM_HORIZON", **kwargs):
    iterator = client.get_shard_iterator(
        StreamName=name, ShardId=shard_id, ShardIteratorType=iterator_type, **kwargs
    )["ShardIterator"]
    return read_shard(client, iterator)


def error_of(excinfo) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return error["Code"], error.get("Message", "")


def expect_error(code: str, call, *args, **kwargs) -> str:
    """Run a client call that must fail with `code`; return the error message."""
    with pytest.raises(ClientError) as excinfo:
        call(*args, **kwargs)
    actual_code, message = error_of(excinfo)
    assert actual_code == code, f"expected {code}, got {actual_code}: {message}"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return message


@dataclass
class RawResponse:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def raw_request(
    endpoint: str,
    target: str | None,
    body: bytes,
    content_type: str = JSON_CONTENT_TYPE,
    extra_headers: dict | None = None,
) -> RawResponse:
    """POST one request the way an SDK does (SigV4-signed, over HTTP/1.1)."""
    headers = {"Content-Type": content_type}
    if target is not None:
        headers["X-Amz-Target"] = target
    headers.update(extra_headers or {})
    request = AWSRequest(method="POST", url=endpoint + "/", data=body, headers=headers)
    SigV4Auth(Credentials("x", "x"), "kinesis", REGION).add_auth(request)
    url = urlparse(endpoint)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request("POST", "/", body=body, headers=dict(request.headers.items()))
        response = connection.getresponse()
        payload = response.read()
        return RawResponse(
            response.status, {k.lower(): v for k, v in response.getheaders()}, payload
        )
    finally:
        connection.close()


AWS_CLI_TIMEOUT = 60


def aws_cli_runner(endpoint: str, home, ca_bundle=None):
    """A function that runs `aws kinesis <args> --endpoint-url <endpoint>` (the AWS CLI v1
    installed with the suite) in an AWS environment of its own, so nothing from the host
    (credentials, AWS_CA_BUNDLE, ...) decides anything; `--ca-bundle` when one is given."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        HOME=str(home),
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_CONFIG_FILE=str(home / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )

    def run(*args: str, ca_bundle=ca_bundle) -> subprocess.CompletedProcess:
        trust = ["--ca-bundle", str(ca_bundle)] if ca_bundle is not None else []
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "awscli",
                "kinesis",
                *args,
                "--endpoint-url",
                endpoint,
                *trust,
                "--region",
                REGION,
                "--output",
                "json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=AWS_CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )

    return run


def cli_json(process: subprocess.CompletedProcess) -> dict:
    """The JSON a successful CLI run printed (empty output is `{}`)."""
    assert process.returncode == 0, f"exit {process.returncode}: {process.stderr}"
    return json.loads(process.stdout) if process.stdout.strip() else {}
