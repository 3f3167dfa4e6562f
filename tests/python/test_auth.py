"""Authentication and policies as a new user meets them: a node started with
`--auth sigv4` and a bootstrap admin key, keys and policies made with the `sluice auth`
CLI, and boto3 calls signed with right and wrong secrets, stale dates and tampered bodies."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from unittest import mock

import boto3
import pytest
import trustme
from botocore.config import Config
from botocore.exceptions import ClientError

import support
from conftest import NodeDidNotStart, Server, _binary, finish_node, start_node

ADMIN_ID = "AKIAPYTESTADMIN00001"
ADMIN_SECRET = "python-suite-admin-secret"


ADMIN_ENV = {
    "SLUICE_AUTH": "sigv4",
    "SLUICE_ADMIN_ACCESS_KEY_ID": ADMIN_ID,
    "SLUICE_ADMIN_SECRET_ACCESS_KEY": ADMIN_SECRET,
}


def _start(root, args=(), ca_bundle=None) -> Server:
    try:
        return start_node(root, args, env=ADMIN_ENV, ca_bundle=ca_bundle)
    except NodeDidNotStart as error:
        pytest.fail(f"auth node did not start:\n{error}")


@pytest.fixture(scope="module")
def auth_node(tmp_path_factory):
    node = _start(tmp_path_factory.mktemp("auth"))
    yield node
    finish_node(node)


def client(node, key_id: str, secret: str):
    return boto3.client(
        "kinesis",
        endpoint_url=node.endpoint,
        region_name=support.REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        verify=str(node.ca_bundle) if node.ca_bundle else None,
        config=Config(retries={"max_attempts": 1}),
    )


def sluice_cli(node, *args: str, key: tuple[str, str] = (ADMIN_ID, ADMIN_SECRET)) -> str:
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=key[0],
        AWS_SECRET_ACCESS_KEY=key[1],
        SLUICE_ENDPOINT=node.grpc_endpoint,
    )
    if node.ca_bundle:
        env["SLUICE_CA_BUNDLE"] = str(node.ca_bundle)
    result = subprocess.run(
        [str(_binary()), *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def error_code(call) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response["Error"]
    return error["Code"], error.get("Message", "")


def test_the_admin_key_works_and_wrong_secrets_do_not(auth_node):
    admin = client(auth_node, ADMIN_ID, ADMIN_SECRET)
    assert "StreamNames" in admin.list_streams()

    code, message = error_code(lambda: client(auth_node, ADMIN_ID, "wrong-secret").list_streams())
    assert code == "InvalidSignatureException"
    assert message.startswith("The request signature we calculated does not match")

    code, message = error_code(
        lambda: client(auth_node, "AKIANOSUCHKEY0000000", "whatever").list_streams()
    )
    assert code == "UnrecognizedClientException"
    assert message == "The security token included in the request is invalid."


def test_stale_dates_are_refused(auth_node):
    admin = client(auth_node, ADMIN_ID, ADMIN_SECRET)
    stale = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(
        minutes=20
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=stale):
        code, message = error_code(admin.list_streams)
    assert code == "InvalidSignatureException"
    assert message.startswith("Signature expired: ")


def test_a_body_changed_after_signing_is_refused(auth_node):
    admin = client(auth_node, ADMIN_ID, ADMIN_SECRET)
    name = support.unique_name("tamper")
    admin.create_stream(StreamName=name, ShardCount=1)
    support.wait_active(admin, name)

    # Signed for a decoy of the same length, then pointed at the real stream.
    decoy = "decoy" + "-" * (len(name) - 5)

    def tamper(request, **_):
        request.body = request.body.replace(decoy.encode(), name.encode())

    tampering = client(auth_node, ADMIN_ID, ADMIN_SECRET)
    tampering.meta.events.register("before-send.kinesis.DeleteStream", tamper)
    code, _ = error_code(lambda: tampering.delete_stream(StreamName=decoy))
    assert code == "InvalidSignatureException"
    assert admin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
        "StreamStatus"
    ] == "ACTIVE"


def test_keys_and_policies_from_the_cli_decide_what_boto3_may_do(auth_node):
    admin = client(auth_node, ADMIN_ID, ADMIN_SECRET)
    allowed_stream = support.unique_name("allowed")
    other_stream = support.unique_name("other")
    for name in (allowed_stream, other_stream):
        admin.create_stream(StreamName=name, ShardCount=1)
        support.wait_active(admin, name)

    created = json.loads(
        sluice_cli(auth_node, "auth", "key", "create", "--user", "dave", "--output", "json")
    )
    key = (created["AccessKeyId"], created["SecretAccessKey"])
    dave = client(auth_node, *key)

    # No policy yet: everything is denied, with AWS's message.
    code, message = error_code(
        lambda: dave.put_record(StreamName=allowed_stream, Data=b"x", PartitionKey="k")
    )
    assert code == "AccessDeniedException"
    assert message == (
        f"User: arn:aws:iam::{support.ACCOUNT}:user/dave is not authorized to perform: "
        f"kinesis:PutRecord on resource: {support.stream_arn(allowed_stream)} because no "
        "identity-based policy allows the kinesis:PutRecord action"
    )

    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["kinesis:PutRecord", "kinesis:Describe*"],
                "Resource": support.stream_arn(allowed_stream),
            },
            {"Effect": "Deny", "Action": "kinesis:DescribeStream", "Resource": "*"},
        ],
    }
    policy_path = os.path.join(os.path.dirname(__file__), ".dave-policy.json")
    with open(policy_path, "w") as f:
        json.dump(policy, f)
    try:
        sluice_cli(
            auth_node, "auth", "policy", "attach", key[0], "--name", "writer",
            "--document", policy_path,
        )
    finally:
        os.remove(policy_path)

    assert dave.put_record(StreamName=allowed_stream, Data=b"x", PartitionKey="k")["ShardId"]
    assert dave.describe_stream_summary(StreamName=allowed_stream)["StreamDescriptionSummary"]
    code, message = error_code(lambda: dave.describe_stream(StreamName=allowed_stream))
    assert code == "AccessDeniedException"
    assert message.endswith("with an explicit deny in an identity-based policy")
    code, _ = error_code(
        lambda: dave.put_record(StreamName=other_stream, Data=b"x", PartitionKey="k")
    )
    assert code == "AccessDeniedException"
    code, _ = error_code(dave.list_streams)
    assert code == "AccessDeniedException"

    listed = json.loads(sluice_cli(auth_node, "auth", "key", "list", "--output", "json"))
    entry = next(k for k in listed if k["AccessKeyId"] == key[0])
    assert entry["UserName"] == "dave" and entry["Policies"] == ["writer"]
    assert all("SecretAccessKey" not in k for k in listed)

    # Dave cannot manage keys; deleting his key locks him out.
    denied = subprocess.run(
        [str(_binary()), "auth", "key", "list"],
        env=dict(
            os.environ,
            AWS_ACCESS_KEY_ID=key[0],
            AWS_SECRET_ACCESS_KEY=key[1],
            SLUICE_ENDPOINT=auth_node.grpc_endpoint,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode != 0
    assert "AccessDeniedException" in denied.stderr
    sluice_cli(auth_node, "auth", "key", "delete", key[0])
    code, _ = error_code(
        lambda: dave.put_record(StreamName=allowed_stream, Data=b"x", PartitionKey="k")
    )
    assert code == "UnrecognizedClientException"


def test_a_new_user_over_tls_gets_exactly_what_the_policy_allows(tmp_path_factory):
    """The whole path as a new user walks it: TLS and SigV4 on, a key and a policy made with
    the CLI over https, boto3 signing with that key over https."""
    root = tmp_path_factory.mktemp("auth-tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, bundle = root / "node.crt", root / "node.key", root / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(bundle))
    node = _start(root, ["--tls-cert", str(cert), "--tls-key", str(key)], ca_bundle=bundle)
    try:
        admin = client(node, ADMIN_ID, ADMIN_SECRET)
        name = support.unique_name("tls-auth")
        admin.create_stream(StreamName=name, ShardCount=1)
        support.wait_active(admin, name)

        created = json.loads(
            sluice_cli(node, "auth", "key", "create", "--user", "erin", "--output", "json")
        )
        document = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "kinesis:PutRecord", "Resource": "*"}
                ],
            }
        )
        policy_path = root / "policy.json"
        policy_path.write_text(document)
        sluice_cli(
            node, "auth", "policy", "attach", created["AccessKeyId"], "--name", "put-only",
            "--document", str(policy_path),
        )
        erin = client(node, created["AccessKeyId"], created["SecretAccessKey"])
        assert erin.put_record(StreamName=name, Data=b"over tls", PartitionKey="k")["ShardId"]
        code, message = error_code(lambda: erin.describe_stream(StreamName=name))
        assert code == "AccessDeniedException"
        assert "kinesis:DescribeStream" in message
    finally:
        finish_node(node)
