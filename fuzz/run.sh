#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each). Uses cargo-fuzz; on a
# stable toolchain the sanitizer-free mode is used.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for target in decode_json decode_cbor segment_recovery; do
    echo "== fuzzing $target for ${SECONDS_PER_TARGET}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=65536
done
