"""Shared helpers of the deployment checks: render the Helm chart offline and read the result.

The packages are imported at module level on purpose: a missing one is a collection error,
so the suite fails instead of skipping.
"""

from __future__ import annotations

import base64
import os
import pathlib
import tomllib
from typing import Any

import helm_python
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "sluice"
HERE = pathlib.Path(__file__).resolve().parent
KUBE_VERSION = "1.30.0"
RELEASE = "sluice"
NAMESPACE = "kinesis"

# Name of each values set -> its file (None: the chart's defaults).
VALUE_SETS: dict[str, pathlib.Path | None] = {
    "defaults": None,
    "single": HERE / "values-single.yaml",
    "five-tls": HERE / "values-five-tls.yaml",
}


def sluice_binary() -> pathlib.Path:
    """The node binary under test: SLUICE_BIN, default target/debug/sluice."""
    binary = pathlib.Path(os.environ.get("SLUICE_BIN", REPO / "target" / "debug" / "sluice"))
    if not binary.is_absolute():
        binary = REPO / binary
    assert os.access(binary, os.X_OK), f"no sluice binary at {binary}: run `cargo build -p sluice`"
    return binary


def load_values(name: str) -> dict[str, Any]:
    path = VALUE_SETS[name]
    if path is None:
        return {}
    values = yaml.safe_load(path.read_text())
    assert isinstance(values, dict), f"{path} is not a mapping"
    return values


class Rendered:
    """The manifests of one render, parsed."""

    def __init__(self, manifests: dict[str, str]):
        self.notes = ""
        self.documents: list[dict[str, Any]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for document in yaml.safe_load_all(text):
                if document:
                    self.documents.append(document)

    def kinds(self) -> list[str]:
        return sorted(d["kind"] for d in self.documents)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.documents if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = self.all(kind)
        assert len(found) <= 1, f"expected at most one {kind}, found {len(found)}"
        return found[0] if found else None

    @property
    def statefulset(self) -> dict[str, Any]:
        return self.one("StatefulSet")

    @property
    def pod(self) -> dict[str, Any]:
        return self.statefulset["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        (container,) = [c for c in self.pod["containers"] if c["name"] == "sluice"]
        return container

    @property
    def args(self) -> list[str]:
        return self.container["args"]

    @property
    def env(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.container.get("env", [])}

    @property
    def config_toml(self) -> str:
        return self.one("ConfigMap")["data"]["sluice.toml"]

    @property
    def config(self) -> dict[str, Any]:
        return tomllib.loads(self.config_toml)

    def volume(self, name: str) -> dict[str, Any] | None:
        found = [v for v in self.pod.get("volumes", []) if v["name"] == name]
        return found[0] if found else None

    def mount(self, name: str, container: dict[str, Any] | None = None) -> dict[str, Any] | None:
        container = container or self.container
        found = [m for m in container.get("volumeMounts", []) if m["name"] == name]
        return found[0] if found else None

    def secret_data(self, name: str) -> dict[str, str]:
        secret = self.one("Secret", name)
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def render(values: dict[str, Any]) -> Rendered:
    with helm_python.Chart.load(os.fspath(CHART)) as chart:
        return Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))


@pytest.fixture(scope="session", params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def rendered_sets() -> dict[str, Rendered]:
    return {name: render(load_values(name)) for name in VALUE_SETS}
