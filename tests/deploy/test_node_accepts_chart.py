"""The real `sluice server` accepts what the chart gives it.

Each value set is rendered, and the node binary (SLUICE_BIN, default target/debug/sluice) is
started as the pod would start it: the container's args, the ConfigMap's sluice.toml, the
environment with Secret references resolved, and files under the container's paths moved
into a temporary directory. Only the data directory and the listen addresses are overridden
(by environment, which the TOML file yields to) so that the node uses port 0 on loopback. The
node must start, answer as configured (authentication, TLS, /metrics) and stop cleanly.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import ssl
import subprocess
import threading
import time
from typing import Any

import pytest
import trustme
from conftest import Rendered, sluice_binary

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SERVING = "sluice node serving"
START_TIMEOUT_SECS = 30
# Values of the Secrets that value sets name but do not create.
EXISTING_SECRETS = {
    "kinesis-admin": {"id": "AKIAOPERATORKEY00001", "secret": "operator-chosen-secret-0123456789"},
}


class Node:
    """A running `sluice server` and what it printed."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.lines: list[str] = []
        self.serving = threading.Event()
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(ANSI.sub("", line.rstrip("\n")))
            if SERVING in line:
                self.serving.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_serving(self) -> str:
        """The Kinesis address the node reports once it serves."""
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while not self.serving.wait(0.05):
            if self.process.poll() is not None:
                self.reader.join(5)
                pytest.fail(f"sluice exited with {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"sluice did not serve within {START_TIMEOUT_SECS}s:\n{self.output()}")
        line = next(line for line in self.lines if SERVING in line)
        match = re.search(r"kinesis\W{1,3}(127\.0\.0\.1:\d+)", line)
        assert match, f"no kinesis address in {line!r}"
        return match.group(1)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            pytest.fail(f"sluice did not stop on SIGTERM:\n{self.output()}")
        self.reader.join(5)
        return code


def secret_value(rendered: Rendered, ref: dict[str, str]) -> str:
    chart_secrets = {s["metadata"]["name"] for s in rendered.all("Secret")}
    if ref["name"] in chart_secrets:
        return rendered.secret_data(ref["name"])[ref["key"]]
    return EXISTING_SECRETS[ref["name"]][ref["key"]]


def container_env(rendered: Rendered) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, entry in rendered.env.items():
        if "value" in entry:
            env[name] = entry["value"]
            continue
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            env[name] = secret_value(rendered, source["secretKeyRef"])
        elif source.get("fieldRef", {}).get("fieldPath") == (
            "metadata.labels['apps.kubernetes.io/pod-index']"
        ):
            env[name] = "0"
        elif source.get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            # zoneFromNode: the node asks the API server every pod is told of (below) for
            # this Kubernetes node's labels; here there is none, so it starts without a zone.
            env[name] = "worker-1"
            env["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
            env["KUBERNETES_SERVICE_PORT"] = "1"
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            # Pod 0 of the StatefulSet: the pod every other pod joins through.
            env[name] = rendered.env["SLUICE_JOIN"]["value"].split(".")[0]
        else:
            pytest.fail(f"cannot resolve {name}: {source}")
    # Kubernetes expands $(NAME) references to variables defined before.
    for name, value in env.items():
        env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)
    return env


class Pod:
    """The node container's filesystem paths, under a temporary root."""

    def __init__(self, root: pathlib.Path, rendered: Rendered):
        self.root = root
        self.rendered = rendered
        self.tls_ca: trustme.CA | None = None

    def path(self, container_path: str) -> pathlib.Path:
        assert container_path.startswith("/"), container_path
        return self.root / container_path.lstrip("/")

    def write(self, container_path: str, text: str, mode: int = 0o440) -> None:
        path = self.path(container_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)

    def lay_out(self) -> None:
        """Writes what the pod's volumes would hold."""
        config_mount = self.rendered.mount("config")["mountPath"]
        self.write(f"{config_mount}/sluice.toml", self.rendered.config_toml)
        tls_mount = self.rendered.mount("tls")
        if tls_mount:
            self.tls_ca = trustme.CA()
            leaf = self.tls_ca.issue_cert("127.0.0.1", "localhost")
            chain = "".join(pem.bytes().decode() for pem in leaf.cert_chain_pems)
            self.write(f"{tls_mount['mountPath']}/tls.crt", chain)
            self.write(f"{tls_mount['mountPath']}/tls.key", leaf.private_key_pem.bytes().decode())
            self.write(f"{tls_mount['mountPath']}/ca.crt", self.tls_ca.cert_pem.bytes().decode())
        if "--keyring" in self.rendered.args:
            self.copy_keyring(0o600)

    def copy_keyring(self, mode: int) -> None:
        """What the keyring init container does: the Secret's file, copied with `mode`."""
        source = self.root / "secret" / "keyring.json"
        if not source.exists():
            source.parent.mkdir(parents=True, exist_ok=True)
            made = subprocess.run(
                [sluice_binary(), "keyring", "create-key", "--alias", "alias/orders",
                 "--keyring", source],
                capture_output=True, text=True, timeout=30, check=False,
            )
            assert made.returncode == 0, made.stderr
        keyring = self.rendered.args[self.rendered.args.index("--keyring") + 1]
        target = self.path(keyring)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(mode)

    def start(self) -> Node:
        argv = [str(sluice_binary())] + [
            str(self.path(arg)) if arg.startswith("/") else arg for arg in self.rendered.args
        ]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "NO_COLOR": "1",
            **container_env(self.rendered),
            "SLUICE_DATA_DIR": str(self.path(self.rendered.config["data_dir"])),
            "SLUICE_KINESIS_ADDR": "127.0.0.1:0",
            "SLUICE_GRPC_ADDR": "127.0.0.1:0",
            "SLUICE_ADMIN_ADDR": "127.0.0.1:0",
        }
        return Node(argv, env)

    def connection(self, address: str) -> http.client.HTTPConnection:
        host, port = address.rsplit(":", 1)
        if self.tls_ca is None:
            return http.client.HTTPConnection(host, int(port), timeout=10)
        context = ssl.create_default_context()
        self.tls_ca.configure_trust(context)
        return http.client.HTTPSConnection(host, int(port), timeout=10, context=context)


def kinesis_request(
    pod: Pod, address: str, operation: str, key: tuple[str, str] | None
) -> tuple[int, dict[str, Any]]:
    """A Kinesis JSON call, signed with SigV4 when `key` is given."""
    body = b"{}"
    headers = {
        "content-type": "application/x-amz-json-1.1",
        "host": address,
        "x-amz-target": f"Kinesis_20131202.{operation}",
    }
    if key is not None:
        headers.update(sigv4(headers, body, key, pod.rendered.config["region"]))
    connection = pod.connection(address)
    try:
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def sigv4(
    headers: dict[str, str], body: bytes, key: tuple[str, str], region: str
) -> dict[str, str]:
    access_key_id, secret = key
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    signed = {**headers, "x-amz-date": amz_date}
    names = sorted(signed)
    canonical = "\n".join(
        ["POST", "/", ""]
        + [f"{name}:{signed[name].strip()}" for name in names]
        + ["", ";".join(names), hashlib.sha256(body).hexdigest()]
    )
    scope = f"{day}/{region}/kinesis/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    signing_key = f"AWS4{secret}".encode()
    for part in (day, region, "kinesis", "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "x-amz-date": amz_date,
        "authorization": f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}",
    }


def wait_ready(pod: "Pod", address: str) -> None:
    """Polls `GET /readyz` until 200: the node joined (bootstrapped) its cluster and its
    admin key exists."""
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while True:
        try:
            connection = pod.connection(address)
            connection.request("GET", "/readyz")
            status = connection.getresponse().status
            connection.close()
            if status == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the node did not become ready"
        time.sleep(0.05)


def admin_key(rendered: Rendered) -> tuple[str, str]:
    env = container_env(rendered)
    return env["SLUICE_ADMIN_ACCESS_KEY_ID"], env["SLUICE_ADMIN_SECRET_ACCESS_KEY"]


def test_node_starts_and_serves_with_the_rendered_configuration(
    value_set: str, rendered_sets: dict[str, Rendered], tmp_path: pathlib.Path
) -> None:
    rendered = rendered_sets[value_set]
    pod = Pod(tmp_path, rendered)
    pod.lay_out()
    node = pod.start()
    try:
        address = node.wait_serving()
        wait_ready(pod, address)

        # The ServiceMonitor's target: unauthenticated, on the Kinesis port.
        connection = pod.connection(address)
        connection.request("GET", "/metrics")
        metrics = connection.getresponse()
        metrics.read()
        connection.close()
        assert metrics.status == 200

        status, answer = kinesis_request(pod, address, "ListStreams", None)
        assert (status, answer.get("__type")) == (400, "MissingAuthenticationTokenException")
        status, answer = kinesis_request(pod, address, "ListStreams", admin_key(rendered))
        assert status == 200, answer
        assert answer["StreamNames"] == []
    finally:
        code = node.stop()
    output = node.output()
    assert code == 0, output
    assert "bootstrap admin key installed" in output
    if rendered.mount("tls"):
        assert "tls is on" in output
    else:
        assert "tls is off" in output
    if rendered.config["log_format"] == "json":
        assert all(json.loads(line) for line in node.lines if line.strip())


def test_node_refuses_a_group_readable_keyring(
    rendered_sets: dict[str, Rendered], tmp_path: pathlib.Path
) -> None:
    """Why the chart copies the keyring out of its Secret volume instead of mounting it."""
    pod = Pod(tmp_path, rendered_sets["single"])
    pod.lay_out()
    pod.copy_keyring(0o440)  # how a Secret volume with defaultMode 0400 looks under an fsGroup
    node = pod.start()
    try:
        code = node.process.wait(START_TIMEOUT_SECS)
    finally:
        node.stop()
    assert code != 0
    assert "open to group or others" in node.output()
