"""TLS as AWS clients use it: the AWS CLI with `--ca-bundle` and boto3 with `verify=`
against a node started with `--tls-cert/--tls-key`, certificates made by trustme."""

from __future__ import annotations

import base64
from pathlib import Path

import boto3
import pytest
import trustme
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError, SSLError

import support
from conftest import NodeDidNotStart, Server, finish_node, start_node



def _start_tls_node(root: Path, leaf: trustme.LeafCert, ca: trustme.CA) -> Server:
    """Starts `sluice server` with TLS on free ports and waits until HTTPS answers."""
    root.mkdir(parents=True, exist_ok=True)
    cert, key, ca_bundle = root / "server.crt", root / "server.key", root / "ca.pem"
    # The full chain (leaf first, then any intermediates), as a web server wants it.
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_bundle))
    try:
        return start_node(root, ["--tls-cert", str(cert), "--tls-key", str(key)], ca_bundle=ca_bundle)
    except NodeDidNotStart as error:
        pytest.fail(f"sluice server with tls did not start:\n{error}")


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory):
    """A node whose certificate (ECDSA, SEC1 key) trustme's CA signed."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    node = _start_tls_node(tmp_path_factory.mktemp("sluice-tls"), leaf, ca)
    yield node
    finish_node(node)


def _boto3(endpoint: str, verify: str | bool):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=support.REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        verify=verify,
        config=Config(
            retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5, read_timeout=30
        ),
    )


@pytest.fixture(scope="module")
def aws(tls_node, tmp_path_factory):
    """Runs `aws kinesis <args> --endpoint-url https://...` with a clean AWS environment:
    only --ca-bundle (the node's CA unless a test passes another) decides trust."""
    return support.aws_cli_runner(
        tls_node.endpoint, tmp_path_factory.mktemp("aws-cli-tls-home"), tls_node.ca_bundle
    )


ok = support.cli_json


def test_cli_over_https_with_ca_bundle(aws):
    name = support.unique_name("cli-tls")
    assert ok(aws("create-stream", "--stream-name", name, "--shard-count", "1")) == {}
    ok(aws("wait", "stream-exists", "--stream-name", name))
    put = ok(
        aws("put-record", "--stream-name", name, "--partition-key", "k", "--data", "over tls")
    )
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
    records = ok(aws("get-records", "--shard-iterator", iterator))["Records"]
    assert [r["SequenceNumber"] for r in records] == [put["SequenceNumber"]]
    assert base64.b64decode(records[0]["Data"]) == b"over tls"
    assert name in ok(aws("list-streams"))["StreamNames"]


def test_cli_refuses_a_certificate_it_does_not_trust(aws):
    failed = aws("list-streams", ca_bundle=None)
    assert failed.returncode != 0
    assert "SSL validation failed" in failed.stderr, failed.stderr


def test_boto3_over_https_with_verify(tls_node):
    kinesis = _boto3(tls_node.endpoint, str(tls_node.ca_bundle))
    name = support.unique_name("boto3-tls")
    kinesis.create_stream(StreamName=name, ShardCount=2)
    support.wait_active(kinesis, name)
    entries = [{"Data": f"record-{i}".encode(), "PartitionKey": f"key-{i}"} for i in range(20)]
    put = kinesis.put_records(StreamName=name, Records=entries)
    assert put["FailedRecordCount"] == 0
    read = []
    for shard in support.all_shards(kinesis, name):
        records, _ = support.read_from(kinesis, name, shard["ShardId"])
        read.extend(records)
    assert sorted(r["Data"] for r in read) == sorted(e["Data"] for e in entries)
    kinesis.delete_stream(StreamName=name)
    support.wait_gone(kinesis, name)


def test_boto3_refuses_a_certificate_it_does_not_trust(tls_node, tmp_path):
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    kinesis = _boto3(tls_node.endpoint, str(stranger))
    with pytest.raises(SSLError):
        kinesis.list_streams()


def test_plain_http_to_the_tls_port_fails(tls_node):
    kinesis = _boto3(f"http://127.0.0.1:{tls_node.kinesis_port}", False)
    # The node answers the cleartext request with a TLS alert and closes the connection.
    with pytest.raises(ConnectionClosedError):
        kinesis.list_streams()
    # The node is unharmed.
    assert "StreamNames" in _boto3(tls_node.endpoint, str(tls_node.ca_bundle)).list_streams()


def test_rsa_pkcs1_key_and_intermediate_chain(tmp_path_factory):
    root = trustme.CA(key_type=trustme.KeyType.RSA)
    intermediate = root.create_child_ca(key_type=trustme.KeyType.RSA)
    leaf = intermediate.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA)
    assert leaf.private_key_pem.bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert len(leaf.cert_chain_pems) == 2
    node = _start_tls_node(tmp_path_factory.mktemp("sluice-tls-rsa"), leaf, root)
    try:
        kinesis = _boto3(node.endpoint, str(node.ca_bundle))
        assert "StreamNames" in kinesis.list_streams()
    finally:
        finish_node(node)
