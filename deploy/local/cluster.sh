#!/usr/bin/env bash
# A 3-node Sluice cluster on this machine, in the background.
#
#   cluster.sh start    start every node that is not running (node 1 bootstraps the cluster,
#                       nodes 2 and 3 join it) and wait until all answer /readyz
#   cluster.sh stop     SIGTERM every node, SIGKILL after 10 s
#   cluster.sh status   each node's process and readiness
#
# Node N: Kinesis on 127.0.0.1:456(6+N), gRPC on 127.0.0.1:5005N, admin on 127.0.0.1:(9089+N),
# data in $DATA_DIR/node-N (default ./data), its log in $DATA_DIR/node-N/log and its pid in
# $DATA_DIR/node-N/pid. SLUICE_BIN overrides the binary (default target/release/sluice);
# SLUICE_LOG_LEVEL sets the nodes' log filter (default info).
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${SLUICE_BIN:-target/release/sluice}
DATA=${DATA_DIR:-./data}
LOG_LEVEL=${SLUICE_LOG_LEVEL:-info}
NODES=(1 2 3)
READY_TIMEOUT_SECONDS=60
STOP_TIMEOUT_SECONDS=10

kinesis_port() { echo $((4566 + $1)); }
grpc_port() { echo $((50050 + $1)); }
admin_port() { echo $((9089 + $1)); }
node_dir() { echo "$DATA/node-$1"; }

# The pid of node $1 if its pid file names a live process that is that node.
running_pid() {
    local pid_file pid command_line
    pid_file="$(node_dir "$1")/pid"
    [[ -f $pid_file ]] || return 1
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: the process must be this node's `sluice server`.
    if [[ -r /proc/$pid/cmdline ]]; then
        command_line=$(tr '\0' ' ' <"/proc/$pid/cmdline")
    else
        command_line=$(ps -o args= -p "$pid" 2>/dev/null || true)
    fi
    [[ $command_line == *" server "*"node-$1"* ]] || return 1
    echo "$pid"
}

# Whether something accepts connections on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Whether GET /readyz on node $1's admin port answers 200 (bash's /dev/tcp: no curl needed).
is_ready() {
    local port
    port=$(admin_port "$1")
    # shellcheck disable=SC2016 # the script is expanded by the inner bash, with $1 = port
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
        IFS=" " read -r _ status _ <&3
        [[ $status == 200 ]]
    ' _ "$port" 2>/dev/null
}

log_tail() {
    echo "--- last 40 lines of $(node_dir "$1")/log ---" >&2
    tail -n 40 "$(node_dir "$1")/log" >&2 || true
}

start_node() {
    local node=$1 dir pid port
    dir=$(node_dir "$node")
    mkdir -p "$dir"
    for port in "$(kinesis_port "$node")" "$(grpc_port "$node")" "$(admin_port "$node")"; do
        if port_in_use "$port"; then
            echo "node $node: port $port on 127.0.0.1 is in use by another process" >&2
            return 1
        fi
    done
    local args=(server --node-id "$node" --data-dir "$dir"
        --kinesis-addr "127.0.0.1:$(kinesis_port "$node")"
        --grpc-addr "127.0.0.1:$(grpc_port "$node")"
        --admin-addr "127.0.0.1:$(admin_port "$node")")
    if [[ $node != 1 ]]; then
        args+=(--join "127.0.0.1:$(grpc_port 1)")
    fi
    echo "===== $(date -u +%Y-%m-%dT%H:%M:%SZ) cluster.sh: $BIN ${args[*]}" >>"$dir/log"
    SLUICE_LOG_LEVEL=$LOG_LEVEL NO_COLOR=1 nohup "$BIN" "${args[@]}" </dev/null >>"$dir/log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/pid"
    echo "node $node: started (pid $pid)"
}

# Waits until every node in "$@" is ready; on failure shows its log and returns 1.
wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT_SECONDS)) node
    for node in "$@"; do
        until is_ready "$node"; do
            if ! running_pid "$node" >/dev/null; then
                echo "node $node exited before it was ready" >&2
                log_tail "$node"
                return 1
            fi
            if ((SECONDS >= deadline)); then
                echo "node $node was not ready within ${READY_TIMEOUT_SECONDS}s" >&2
                log_tail "$node"
                return 1
            fi
            sleep 0.2
        done
        echo "node $node: ready"
    done
}

summary() {
    cat <<EOF

Sluice cluster of ${#NODES[@]} nodes (data and logs in $DATA/node-N):
  Kinesis  http://127.0.0.1:4567  http://127.0.0.1:4568  http://127.0.0.1:4569
  gRPC     127.0.0.1:50051  127.0.0.1:50052  127.0.0.1:50053
  admin    http://127.0.0.1:9090  http://127.0.0.1:9091  http://127.0.0.1:9092  (/metrics /healthz /readyz)
Try:   aws kinesis list-streams --endpoint-url http://127.0.0.1:4567
Logs:  tail -f $DATA/node-1/log
Stop:  make cluster-stop
EOF
}

start() {
    if [[ ! -x $BIN ]]; then
        echo "$BIN is missing: build it with \`cargo build --release -p sluice\` (or set SLUICE_BIN)" >&2
        exit 1
    fi
    local started=() node pid
    for node in "${NODES[@]}"; do
        if pid=$(running_pid "$node"); then
            echo "node $node: already running (pid $pid)"
            continue
        fi
        rm -f "$(node_dir "$node")/pid"
        start_node "$node" || fail_start "${started[@]}"
        started+=("$node")
        # Node 1 bootstraps the cluster: the others can join only once it serves.
        if [[ $node == 1 ]]; then
            wait_ready 1 || fail_start "${started[@]}"
        fi
    done
    if ((${#started[@]} == 0)); then
        echo "the cluster is already running"
    else
        wait_ready "${started[@]}" || fail_start "${started[@]}"
    fi
    summary
}

# Stops the nodes this run started, then exits with an error.
fail_start() {
    if (($# > 0)); then
        echo "stopping the nodes started by this run: $*" >&2
        stop_nodes "$@" >&2
    fi
    exit 1
}

# SIGTERM the given nodes, wait up to STOP_TIMEOUT_SECONDS, SIGKILL the rest, remove pid files.
stop_nodes() {
    local node pid pids=() nodes=()
    for node in "$@"; do
        if pid=$(running_pid "$node"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            nodes+=("$node")
        fi
    done
    local deadline=$((SECONDS + STOP_TIMEOUT_SECONDS)) i alive
    while true; do
        alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        if ((alive == 0 || SECONDS >= deadline)); then break; fi
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if kill -0 "${pids[i]}" 2>/dev/null; then
            echo "node ${nodes[i]}: still running after ${STOP_TIMEOUT_SECONDS}s, sending SIGKILL"
            kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
        echo "node ${nodes[i]}: stopped (pid ${pids[i]})"
    done
    for node in "$@"; do
        rm -f "$(node_dir "$node")/pid"
    done
    if ((${#pids[@]} == 0)); then
        echo "no node was running"
    fi
}

status() {
    local node pid state
    for node in "${NODES[@]}"; do
        if pid=$(running_pid "$node"); then
            if is_ready "$node"; then state=ready; else state="not ready"; fi
            echo "node $node: running (pid $pid), $state; Kinesis http://127.0.0.1:$(kinesis_port "$node")"
        else
            echo "node $node: not running"
        fi
    done
}

case "${1:-}" in
start) start ;;
stop) stop_nodes "${NODES[@]}" ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
