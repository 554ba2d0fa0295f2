#!/usr/bin/env bash
# Builds in release mode and runs the load/benchmark tool (loopback only).
# Arguments go to sm-bench: [--listeners 1000,5000] [--seconds 20] [--skip-buffer] [--skip-server] [--skip-<part>|--only-<part>] (parts: hls, link, transcode, operator, big, auth, handoff)
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --workspace --locked
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/sm-bench "$@"
