#!/usr/bin/env bash
# Starts a fresh release node on a temporary data directory, runs the standard `sluice bench`
# suite against it over the Kinesis JSON API and the gRPC write workload, and stops the node.
# Extra arguments are passed to `sluice bench` (e.g. --duration 20).
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${SLUICE_BIN:-target/release/sluice}
DATA=$(mktemp -d)
KINESIS_PORT=${BENCH_KINESIS_PORT:-4599}
GRPC_PORT=${BENCH_GRPC_PORT:-50099}
"$BIN" server --data-dir "$DATA" --kinesis-addr "127.0.0.1:$KINESIS_PORT" \
    --grpc-addr "127.0.0.1:$GRPC_PORT" --log-level warn --throughput-limits false &
NODE=$!
trap 'kill $NODE 2>/dev/null || true; wait $NODE 2>/dev/null || true; rm -rf "$DATA"' EXIT

for _ in $(seq 1 100); do
    if (echo > "/dev/tcp/127.0.0.1/$KINESIS_PORT") 2>/dev/null; then break; fi
    sleep 0.1
done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m)"
"$BIN" bench --endpoint "http://127.0.0.1:$KINESIS_PORT" --workload all "$@"
"$BIN" bench --endpoint "http://127.0.0.1:$KINESIS_PORT" --grpc-endpoint "http://127.0.0.1:$GRPC_PORT" \
    --workload grpc-put-records "$@"
"$BIN" bench --endpoint "http://127.0.0.1:$KINESIS_PORT" --grpc-endpoint "http://127.0.0.1:$GRPC_PORT" \
    --workload grpc-produce "$@"
