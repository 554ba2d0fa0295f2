#!/usr/bin/env bash
# Runs every StreamMachine test: format, lints, unit tests and the
# cross-component tests (real server processes, ffmpeg as encoder and decoder,
# promtool). Installs the Debian packages those use when they are missing.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "test.sh: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The connection-storm tests hold thousands of sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
