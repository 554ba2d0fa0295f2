#!/usr/bin/env bash
# The end-to-end suite on a real Kubernetes cluster (operator/tests/e2e.rs, then
# tests/tests/k8s.rs against the chart installed with helm).
# `./test.sh` runs it whenever ../shared/k8s/ is present or KUBECONFIG is set.
#
#   tests/k8s/run.sh                 brings up the one-node kit of ../shared/k8s/ (K8S_KIT=dir to
#                                    name another), and tears it down at the end
#   KUBECONFIG=… STREAMMACHINE_E2E_LOAD=CMD tests/k8s/run.sh
#                                    uses that cluster; `CMD ARCHIVE NAME:TAG` must make the OCI
#                                    archive available to its nodes as NAME:TAG (a script of yours:
#                                    `skopeo copy oci-archive:ARCHIVE docker://registry/NAME:TAG`
#                                    with the chart's image values pointing there, or a kind node
#                                    import)
#
# Arguments are test-name filters for tests/tests/k8s.rs (e.g. `t3`);
# STREAMMACHINE_E2E_LISTENERS=1000 sets the listeners of the Socket tests.
#
# Builds the release binaries and the two images (tests/k8s/images.sh), loads the
# streamer image as streammachine:e2e-v1 and :e2e-v2 (one image, two tags: a real
# image change to Kubernetes) and the operator as streammachine-operator:e2e,
# installs the chart (release `sm` in streammachine-system) and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
kit=${K8S_KIT:-$root/../shared/k8s}
helm=${HELM:-$(tests/tools/helm.sh)}
export HELM="$helm"
log() { echo "tests/k8s: $*" >&2; }

state=""
cleanup() {
  if [ -n "$state" ]; then
    log "tearing the kit down"
    "$kit/down.sh" --purge >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

started=$(date +%s)
if [ -z "${KUBECONFIG:-}" ]; then
  [ -x "$kit/up.sh" ] || { log "no KUBECONFIG and no kit at $kit"; exit 1; }
  state=$(mktemp -d "${TMPDIR:-/tmp}/sm-k8s.XXXXXX")
  export K8S_STATE=$state
  eval "$("$kit/up.sh")"
  log "kit up in $(( $(date +%s) - started )) s ($K8S_STATE)"
fi

cargo build --release --locked -p streamer --bin streammachine -p streammachine-operator --bin streammachine-operator
images=$root/target/k8s-images
tests/k8s/images.sh "$images"

load() { # archive image
  if [ -n "$state" ]; then
    "$kit/load-image.sh" "$1" "$2" >/dev/null
  elif [ -n "${STREAMMACHINE_E2E_LOAD:-}" ]; then
    $STREAMMACHINE_E2E_LOAD "$1" "$2"
  else
    log "cannot load $2 into this cluster: set STREAMMACHINE_E2E_LOAD"; exit 1
  fi
}
export STREAMMACHINE_E2E_TAG_V1=e2e-v1 STREAMMACHINE_E2E_TAG_V2=e2e-v2
load "$images/streammachine.tar" streammachine:e2e-v1
load "$images/streammachine.tar" streammachine:e2e-v2
load "$images/streammachine-operator.tar" streammachine-operator:e2e
log "images built and loaded after $(( $(date +%s) - started )) s"

# The operator's own end-to-end test first (operator/tests/e2e.rs): it runs
# both controllers in its process, so no installed operator may run beside it.
# On the kit it runs "on the node" (in-node.sh: cluster DNS), where it reaches the
# masters' status API as the operator's pod would, and waits for the pods to
# serve; elsewhere it checks the objects and statuses only.
# On the kit, the cluster is this run's own: e6 may delete the CRDs (an operator
# started before them) and e9 may stop the API server for 60 s.
e2e=(cargo test --locked -p streammachine-operator --test e2e -- --ignored --test-threads 1 --nocapture)
"${e2e[@]}" --list >/dev/null
if [ -n "$state" ]; then
  STREAMMACHINE_E2E_IMAGE=streammachine:e2e-v1 STREAMMACHINE_E2E_DISPOSABLE=1 "$kit/in-node.sh" "${e2e[@]}"
else
  "${e2e[@]}"
fi

# The chart, as a user installs it; the tests upgrade it.
"$helm" uninstall sm -n streammachine-system --wait >/dev/null 2>&1 || true
"$helm" install sm helm/streammachine -n streammachine-system --create-namespace \
  --set image.tag=e2e --set streamerImage.tag=e2e-v1 --wait --timeout 180s >/dev/null
cargo test --locked -p streammachine-tests --test k8s -- --ignored --test-threads 1 --nocapture "$@"
"$helm" uninstall sm -n streammachine-system --wait >/dev/null 2>&1 || true
log "done in $(( $(date +%s) - started )) s"
