#!/usr/bin/env bash
# Runs every StreamMachine test: format, lints, unit tests, the
# cross-component tests (real server processes, ffmpeg as encoder and decoder,
# promtool, hls.js and the native HLS player in headless Chromium, VLC, Icecast 2
# as a relay upstream), and the
# end-to-end tests on a real Kubernetes (tests/k8s/run.sh: images built with
# buildah, the one-node kit of ../shared/k8s/ or any KUBECONFIG). Installs the Debian packages those use
# when they are missing, and hls.js (pinned in tests/web) with npm.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v icecast2 >/dev/null 2>&1 || need+=(icecast2)
command -v cvlc >/dev/null 2>&1 || need+=(vlc-bin vlc-plugin-base)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# hls.js (tests/tests/hls_browser.rs), puppeteer-core and axe-core
# (tests/tests/web_pages.rs): the versions tests/web/package-lock.json pins.
stale=$(node -e '
  const lock = require("./tests/web/package-lock.json").packages;
  for (const name of Object.keys(require("./tests/web/package.json").dependencies)) {
    let have = "";
    try { have = require("./tests/web/node_modules/" + name + "/package.json").version } catch {}
    if (have !== lock["node_modules/" + name].version) { console.log(name); }
  }')
if [ -n "$stale" ]; then
  echo "test.sh: installing $(echo $stale) into tests/web" >&2
  npm ci --prefix tests/web --no-audit --no-fund --loglevel=error >/dev/null
fi

# aiosmtpd from PyPI: the real SMTP server of tests/tests/email_alerts.rs.
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "test.sh: installing aiosmtpd" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  python3 -m pip install --quiet --disable-pip-version-check aiosmtpd \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages aiosmtpd
fi

# Helm 3 (the chart checks), into .tools/ once; kubernetes-validate from PyPI.
helm=$(tests/tools/helm.sh)
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "test.sh: installing kubernetes-validate" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  # A Debian system Python refuses system-wide installs (PEP 668) unless told.
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages kubernetes-validate
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi

# The connection-storm tests hold thousands of sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo fmt --all -- --check
HELM="$helm" HELM_CHECK_REQUIRE_VALIDATE=1 helm/check.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# On a real Kubernetes: the cluster KUBECONFIG names, else the one-node kit in
# ../shared/k8s/ (started and torn down by tests/k8s/run.sh).
if [ -n "${KUBECONFIG:-}" ] || [ -x ../shared/k8s/up.sh ]; then
  HELM="$helm" tests/k8s/run.sh 2>&1 | tee -a "$log" || status=$?
else
  echo "test.sh: no KUBECONFIG and no ../shared/k8s/: the Kubernetes end-to-end tests did not run" >&2
fi
# One closing line for all the test binaries together.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
