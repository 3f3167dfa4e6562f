#!/usr/bin/env bash
# Starts a fresh 3-node release cluster (replication factor 3, ports of `make cluster`) on a
# temporary data directory, runs the `sluice bench` suite through node 1 (which forwards
# each write to its shard's leader), then unary gRPC PutRecords and the Rust client's
# producer, each on a fresh cluster (a cluster that has just taken many GB writes slower:
# the page cache is full), then measures the cluster's idle CPU with 1,000 shards, and
# stops the nodes. Extra arguments are passed to `sluice bench` (e.g. --duration 20).
# BENCH_IDLE_ONLY=1 skips the `sluice bench` suite and measures the idle CPU only.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${SLUICE_BIN:-target/release/sluice}
DATA=$(mktemp -d)
export SLUICE_BIN=$BIN DATA_DIR=$DATA SLUICE_LOG_LEVEL=${SLUICE_LOG_LEVEL:-warn}
# 1,000 shards for the idle measurement need a higher account shard limit.
export SLUICE_SHARD_LIMIT=${SLUICE_SHARD_LIMIT:-2000} SLUICE_THROUGHPUT_LIMITS=false
trap 'bash deploy/local/cluster.sh stop >/dev/null || true; rm -rf "$DATA"' EXIT
bash deploy/local/cluster.sh start >/dev/null
# Stops the nodes, removes their data and starts them again.
fresh_cluster() {
    bash deploy/local/cluster.sh stop >/dev/null
    rm -rf "${DATA:?}"/node-*
    bash deploy/local/cluster.sh start >/dev/null
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); 3 nodes on this machine, replication factor 3"
if [[ ${BENCH_IDLE_ONLY:-0} != 1 ]]; then
    "$BIN" bench --endpoint http://127.0.0.1:4567 --workload all "$@"
    fresh_cluster
    "$BIN" bench --endpoint http://127.0.0.1:4567 --grpc-endpoint http://127.0.0.1:50051 \
        --workload grpc-put-records "$@"
    # The same records through the Rust client's producer, routed to each shard's leader.
    fresh_cluster
    "$BIN" bench --endpoint http://127.0.0.1:4567 --grpc-endpoint http://127.0.0.1:50051 \
        --workload grpc-produce "$@"
    fresh_cluster
fi

# Idle cost of many shard groups: 1,000 shards, each replicated on the three nodes.
"$BIN" stream create idle --shards 1000 --endpoint http://127.0.0.1:50051 >/dev/null
ticks() {
    local total=0 pid fields
    for node in 1 2 3; do
        pid=$(<"$DATA/node-$node/pid")
        read -r -a fields <"/proc/$pid/stat"
        total=$((total + fields[13] + fields[14]))
    done
    echo "$total"
}
# Let the groups form (every shard has a leader, as node 1 sees it: it holds a replica of
# each), then sample.
started=$SECONDS
until [[ $("$BIN" cluster status --endpoint http://127.0.0.1:50051 |
    awk '$1 == "idle" && $4 != "-" { n++ } END { print n + 0 }') == 1000 ]]; do
    if ((SECONDS - started > 300)); then
        echo "the 1,000 shard groups did not all elect a leader within 300 s" >&2
        exit 1
    fi
    sleep 1
done
echo "1000 shard groups formed in $((SECONDS - started)) s"
sleep 5
before=$(ticks)
sleep 20
after=$(ticks)
hz=$(getconf CLK_TCK)
awk -v t=$((after - before)) -v hz="$hz" \
    'BEGIN { printf "idle, 1000 shards x 3 replicas: %.1f%% of one core (3 nodes together, 20 s)\n", 100 * t / hz / 20 }'
