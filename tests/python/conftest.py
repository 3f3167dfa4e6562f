"""Fixtures: one Sluice server per test session, a boto3 client, and disposable streams."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import support

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0


@dataclass
class Server:
    endpoint: str
    process: subprocess.Popen
    log_path: Path
    kinesis_port: int = 0
    grpc_endpoint: str = ""
    ca_bundle: Path | None = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])


class NodeDidNotStart(Exception):
    """The node exited or never answered; the message holds its last log lines."""


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _answers(port: int, ca_bundle: Path | None = None) -> bool:
    """True once `GET /readyz` on the Kinesis port answers 200 (over TLS trusting
    `ca_bundle` when given): the node is a cluster member with a metadata leader and its
    configured admin key exists."""
    try:
        if ca_bundle:
            context = ssl.create_default_context(cafile=str(ca_bundle))
            connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=context)
        else:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/readyz")
        status = connection.getresponse().status
        connection.close()
        return status == 200
    except OSError:
        return False


def _binary() -> Path:
    configured = os.environ.get("SLUICE_BIN")
    binary = Path(configured) if configured else REPO_ROOT / "target" / "debug" / "sluice"
    if not binary.is_absolute():
        binary = (Path.cwd() / binary).resolve()
    if not binary.is_file():
        pytest.exit(f"sluice binary not found at {binary} (set SLUICE_BIN)", returncode=2)
    return binary


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def start_node(
    root: Path,
    args: tuple[str, ...] | list[str] = (),
    env: dict[str, str] | None = None,
    ca_bundle: Path | None = None,
) -> Server:
    """Starts `sluice server` on free ports with its data and log under `root` (extra flags
    in `args`, extra environment in `env`; https when `ca_bundle` is given) and waits until
    the node is ready."""
    kinesis_port, grpc_port = _free_ports(2)
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "server.log"
    full_env = dict(os.environ, SLUICE_LOG_LEVEL=os.environ.get("SLUICE_LOG_LEVEL", "warn"))
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(_binary()),
                "server",
                "--data-dir",
                str(root / "data"),
                "--kinesis-addr",
                f"127.0.0.1:{kinesis_port}",
                "--grpc-addr",
                f"127.0.0.1:{grpc_port}",
                "--fsync",
                "false",
                *args,
            ],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    scheme = "https" if ca_bundle else "http"
    server = Server(
        endpoint=f"{scheme}://127.0.0.1:{kinesis_port}",
        process=process,
        log_path=log_path,
        kinesis_port=kinesis_port,
        grpc_endpoint=f"{scheme}://127.0.0.1:{grpc_port}",
        ca_bundle=ca_bundle,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if _answers(kinesis_port, ca_bundle):
            return server
        time.sleep(0.05)
    _stop(process)
    raise NodeDidNotStart(server.log_tail())


def finish_node(server: Server) -> None:
    """Stops a node; fails the test if it crashed or panicked while it ran."""
    crashed = server.process.poll() is not None
    _stop(server.process)
    if crashed:
        pytest.fail(f"sluice server exited during the run:\n{server.log_tail()}")
    if "panicked" in server.log_path.read_text(errors="replace"):
        pytest.fail(f"sluice server panicked during the run:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    last_error = ""
    for attempt in range(3):
        try:
            instance = start_node(tmp_path_factory.mktemp(f"sluice-{attempt}"))
            break
        except NodeDidNotStart as error:
            last_error = str(error)
    else:
        pytest.exit(f"sluice server did not start:\n{last_error}", returncode=3)

    yield instance

    finish_node(instance)


@pytest.fixture(autouse=True)
def _server_alive(request):
    """Fail the test that killed the server, with the server's last log lines."""
    yield
    if "server" in request.fixturenames:
        instance = request.getfixturevalue("server")
        if instance.process.poll() is not None:
            pytest.fail(
                f"sluice server died (exit {instance.process.returncode}):\n{instance.log_tail()}"
            )


def make_client(endpoint: str, **config):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=support.REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=5,
            read_timeout=30,
            **config,
        ),
    )


@pytest.fixture(scope="session")
def endpoint(server) -> str:
    return server.endpoint


@pytest.fixture(scope="session")
def kinesis(endpoint):
    return make_client(endpoint)


@pytest.fixture(scope="session")
def kinesis_unvalidated(endpoint):
    """A client that skips botocore's own parameter checks, so the server sees bad input."""
    return make_client(endpoint, parameter_validation=False)


@pytest.fixture
def make_stream(kinesis):
    """Create streams that are deleted again when the test ends."""
    created: list[str] = []

    def create(
        prefix: str = "t",
        shards: int | None = 1,
        on_demand: bool = False,
        name: str | None = None,
        **extra,
    ) -> str:
        name = name or support.unique_name(prefix)
        kwargs = dict(StreamName=name, **extra)
        if on_demand:
            kwargs["StreamModeDetails"] = {"StreamMode": "ON_DEMAND"}
        elif shards is not None:
            kwargs["ShardCount"] = shards
        kinesis.create_stream(**kwargs)
        created.append(name)
        support.wait_active(kinesis, name)
        return name

    yield create

    for name in created:
        try:
            kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
        except ClientError as error:
            if error.response["Error"]["Code"] not in (
                "ResourceNotFoundException",
                "ResourceInUseException",
            ):
                raise


@pytest.fixture
def stream(make_stream) -> str:
    """A one-shard provisioned stream."""
    return make_stream("one")
