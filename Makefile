# Sluice: the two commands are `make run` and `make test`.
CARGO ?= cargo
DATA_DIR ?= ./data

.PHONY: run build release test test-rust test-clients test-deploy lint fmt bench bench-cluster fuzz clean cluster cluster-stop

## Start a single node with embedded defaults (data in ./data, Kinesis on 127.0.0.1:4567, gRPC on 127.0.0.1:50051).
run:
	$(CARGO) run --release -p sluice -- server --data-dir $(DATA_DIR) --admin-addr 127.0.0.1:9090

build:
	$(CARGO) build -p sluice

release:
	$(CARGO) build --release -p sluice

## Every test: formatting, lints, Rust unit + integration suites, boto3 and JavaScript SDK suites,
## Helm chart and container image checks.
test: lint test-rust test-clients test-deploy

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust: build
	$(CARGO) nextest run --workspace --all-targets --no-fail-fast

test-clients: build
	bash tests/run-client-tests.sh target/debug/sluice

## Helm chart (lint, Kubernetes 1.30 schemas, a node started with its configuration) and Dockerfile checks,
## in the same .venv as the client suites.
test-deploy: build
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/deploy/requirements.txt
	SLUICE_BIN=target/debug/sluice .venv/bin/python -m pytest tests/deploy -q -p no:cacheprovider

fmt:
	$(CARGO) fmt --all

## Load generator against a fresh release node; prints throughput and latency percentiles.
bench: release
	bash deploy/local/bench.sh

## Load generator against a fresh 3-node release cluster (replication factor 3), and its idle CPU
## with 1,000 shards.
bench-cluster: release
	bash deploy/local/bench-cluster.sh

## Bounded fuzzing of request decoding and segment recovery (not part of `make test`).
fuzz:
	bash fuzz/run.sh $(FUZZ_SECONDS)

clean:
	$(CARGO) clean

## Three release nodes in the background (Kinesis on 127.0.0.1:4567-4569, gRPC on 127.0.0.1:50051-50053,
## admin on 127.0.0.1:9090-9092; data, log and pid in ./data/node-1..3); waits until all are ready.
cluster: release
	DATA_DIR=$(DATA_DIR) bash deploy/local/cluster.sh start

## Stop the nodes of `make cluster` (SIGTERM, SIGKILL after 10 s).
cluster-stop:
	DATA_DIR=$(DATA_DIR) bash deploy/local/cluster.sh stop
