"""deploy/docker/Dockerfile and .dockerignore, checked without a Docker engine.

The build stage's command must produce the file the runtime stage copies (asked of cargo
itself), the default command must be accepted by the real `sluice server`, and the image must
agree with the chart (data directory, ports, user).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
from typing import Any

from conftest import REPO, Rendered, sluice_binary

DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BUILD = "cargo build --release -p sluice --locked"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, comments dropped and continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for word, rest in instructions():
        if word == "FROM":
            image, _, alias = rest.partition(" AS ")
            result.append({"image": image.strip(), "alias": alias.strip(), "steps": []})
        else:
            assert result, "instruction before FROM"
            result[-1]["steps"].append((word, rest))
    return result


def steps(stage: dict[str, Any], word: str) -> list[str]:
    return [rest for w, rest in stage["steps"] if w == word]


def cargo_metadata() -> dict[str, Any]:
    # As in the image: no target directory set from outside.
    env = {k: v for k, v in os.environ.items() if k not in ("CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR")}
    out = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_build_stage_produces_the_copied_binary() -> None:
    build, runtime = stages()
    assert build["image"] == "rust:1-bookworm" and build["alias"] == "build"
    assert steps(build, "WORKDIR") == ["/src"]
    assert steps(build, "COPY")[0] == ". ."
    assert BUILD in steps(build, "RUN")

    metadata = cargo_metadata()
    (package,) = [p for p in metadata["packages"] if p["name"] == "sluice"]
    binaries = [t["name"] for t in package["targets"] if "bin" in t["kind"]]
    assert binaries == ["sluice"]
    workspace = pathlib.Path(metadata["workspace_root"])
    target = pathlib.Path(metadata["target_directory"]).relative_to(workspace)
    built = f"/src/{target}/release/sluice"
    assert built == "/src/target/release/sluice"
    assert f"--from=build {built} /usr/local/bin/sluice" in steps(runtime, "COPY")
    assert (REPO / "Cargo.lock").is_file(), "--locked needs Cargo.lock"


def test_runtime_stage_is_distroless_nonroot() -> None:
    _, runtime = stages()
    assert runtime["image"] == "gcr.io/distroless/cc-debian12:nonroot"
    assert steps(runtime, "USER") == ["nonroot"]
    assert steps(runtime, "ENTRYPOINT") == ['["/usr/local/bin/sluice"]']
    assert steps(runtime, "VOLUME") == ["/var/lib/sluice"]
    assert steps(runtime, "EXPOSE") == ["4567 50051 9090"]
    # The volume's directory belongs to nonroot, or the node cannot write its data.
    assert "--from=build --chown=65532:65532 /out/var/lib/sluice /var/lib/sluice" in steps(
        runtime, "COPY"
    )


def default_command() -> list[str]:
    _, runtime = stages()
    (cmd,) = steps(runtime, "CMD")
    return json.loads(cmd)


def test_default_command_is_accepted_by_the_binary() -> None:
    command = default_command()
    assert command == [
        "server",
        "--data-dir",
        "/var/lib/sluice",
        "--kinesis-addr",
        "0.0.0.0:4567",
        "--grpc-addr",
        "0.0.0.0:50051",
        "--admin-addr",
        "0.0.0.0:9090",
    ]
    binary = sluice_binary()
    help_text = subprocess.run(
        [binary, "server", "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for flag in (arg for arg in command if arg.startswith("--")):
        assert re.search(rf"^\s+{re.escape(flag)} ", help_text, re.M), f"{flag} is not a flag"
    # clap parses every argument before the trailing --help: a bad flag or value fails here.
    parsed = subprocess.run(
        [binary, *command, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert parsed.returncode == 0, parsed.stderr
    refused = subprocess.run(
        [binary, *command, "--no-such-flag", "x", "--help"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert refused.returncode != 0


def test_image_agrees_with_the_chart(rendered_sets: dict[str, Rendered]) -> None:
    rendered = rendered_sets["defaults"]
    command = default_command()
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    _, runtime = stages()
    assert rendered.config["data_dir"] == flags["--data-dir"] == steps(runtime, "VOLUME")[0]
    assert rendered.config["kinesis_addr"] == flags["--kinesis-addr"]
    assert rendered.config["grpc_addr"] == flags["--grpc-addr"]
    assert rendered.config["admin_addr"] == flags["--admin-addr"]
    exposed = {int(port) for port in steps(runtime, "EXPOSE")[0].split()}
    assert {p["containerPort"] for p in rendered.container["ports"]} == exposed
    # distroless's nonroot user.
    assert rendered.pod["securityContext"]["runAsUser"] == 65532
    assert rendered.pod["securityContext"]["runAsGroup"] == 65532


def ignore_patterns() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: a pattern matching the path or one of its parents."""
    for pattern in patterns:
        assert not pattern.startswith("!"), "exceptions are not handled here"
        regex = re.escape(pattern.strip("/"))
        regex = regex.replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            return True
    return False


def test_dockerignore_keeps_sources_and_drops_build_output() -> None:
    patterns = ignore_patterns()
    for path in [
        "target/release/sluice",
        "data/meta/log",
        ".venv/bin/python",
        "tests/node/node_modules/x/index.js",
        ".git/HEAD",
    ]:
        assert ignored(path, patterns), path
    needed = ["Cargo.toml", "Cargo.lock", "proto/sluice/v1/sluice.proto"]
    for package in cargo_metadata()["packages"]:
        manifest = pathlib.Path(package["manifest_path"]).relative_to(REPO)
        needed.append(str(manifest))
        needed.extend(
            str(pathlib.Path(t["src_path"]).relative_to(REPO)) for t in package["targets"]
        )
    for path in needed:
        assert (REPO / path).exists(), path
        assert not ignored(path, patterns), f"{path} is needed to build but ignored"

