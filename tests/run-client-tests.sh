#!/usr/bin/env bash
# Client compatibility suites: boto3 (tests/python) and the AWS SDK for JavaScript v3
# (tests/node), each against a real `sluice server` process that the suite starts itself.
#
# Usage: tests/run-client-tests.sh [path/to/sluice]   (default: target/debug/sluice)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

binary="${1:-target/debug/sluice}"
case "$binary" in
    /*) ;;
    *) binary="$repo_root/$binary" ;;
esac
if [[ ! -x "$binary" ]]; then
    echo "error: sluice binary not found or not executable: $binary (run 'cargo build -p sluice')" >&2
    exit 2
fi
export SLUICE_BIN="$binary"
export SLUICE_LOG_LEVEL="${SLUICE_LOG_LEVEL:-warn}"

for tool in python3 node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: '$tool' is required for the client tests" >&2
        exit 2
    fi
done

# --- Python / boto3 ---
venv="$repo_root/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt

echo "== boto3 suite (pytest) =="
python_status=0
"$venv/bin/python" -m pytest tests/python -q -p no:cacheprovider || python_status=$?
# Exit code 5 means no tests were collected: that is a failure here too.

# --- Node / AWS SDK for JavaScript v3 ---
echo "== JavaScript SDK v3 suite (node --test) =="
node_status=0
(
    cd tests/node
    if [[ -f package-lock.json ]]; then
        npm ci --no-audit --no-fund --loglevel=error
    else
        npm install --no-audit --no-fund --loglevel=error
    fi
    node --test
) || node_status=$?

echo "== client suites: pytest exit ${python_status}, node exit ${node_status} =="
if [[ $python_status -ne 0 || $node_status -ne 0 ]]; then
    exit 1
fi
