#!/usr/bin/env bash
# The Kubernetes testbed the cluster tests run against (../shared/k8s-testbed, see its README):
# a real kube-apiserver, controller-manager and scheduler on loopback, built once from Debian's
# source package and cached in the user's cache directory.
#
#   bash scripts/testbed.sh build    # build only (first time about 10 to 20 minutes, about 3 GB)
#   bash scripts/testbed.sh start    # build if needed, start unless running; prints the KUBECONFIG
#   bash scripts/testbed.sh stop     # stop it, if this script started it (--force: in any case)
#   bash scripts/testbed.sh env      # prints `export KUBECONFIG=...` for a shell to eval
#   bash scripts/testbed.sh scripts  # prints where the testbed's scripts are (tests/testbed.py asks)
#
# NEXUS_TESTBED_SCRIPTS: where the testbed's scripts are (default ../shared/k8s-testbed beside
# this repository, or, in a clone of a local checkout such as CI's fresh one, beside that checkout). NEXUS_TESTBED: its build and state (default ~/.cache/nexus-k8s-testbed).
# The stand-in kubelet runs with TESTBED_FAIL_IMAGE=nexus-crashloop: a container whose image
# names it crash-loops, which is how the tests make a service fail (tests/testbed.py).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
default_scripts() {
  local beside=$ROOT/../shared/k8s-testbed origin
  origin=$(git -C "$ROOT" config --get remote.origin.url 2>/dev/null || true)
  if [ ! -d "$beside" ] && [ -n "$origin" ] && [ -d "$origin/../shared/k8s-testbed" ]; then
    beside=$origin/../shared/k8s-testbed  # a clone of a local checkout: the testbed beside the original
  fi
  (cd "$beside" 2>/dev/null && pwd) || echo "$beside"
}
SCRIPTS=${NEXUS_TESTBED_SCRIPTS:-$(default_scripts)}
STATE=${NEXUS_TESTBED:-${XDG_CACHE_HOME:-$HOME/.cache}/nexus-k8s-testbed}
KUBECONFIG_FILE=$STATE/kubeconfig
FLAG=$STATE/run/started-by-scripts-testbed  # this script started the running testbed, so it stops it

running() { [ -f "$KUBECONFIG_FILE" ] && KUBECONFIG=$KUBECONFIG_FILE kubectl get --raw /readyz >/dev/null 2>&1; }
need_scripts() {
  [ -x "$SCRIPTS/start-cluster.sh" ] || [ -f "$SCRIPTS/start-cluster.sh" ] || {
    echo "testbed.sh: no testbed scripts at $SCRIPTS (set NEXUS_TESTBED_SCRIPTS)" >&2; exit 1; }
}

case "${1:-}" in
  scripts)
    echo "$SCRIPTS"
    ;;
  build)
    need_scripts
    bash "$SCRIPTS/start-cluster.sh" --build-only >/dev/null
    echo "testbed built in $STATE/bin"
    ;;
  start)
    if running; then
      echo "testbed already running: export KUBECONFIG=$KUBECONFIG_FILE (left running afterwards)"
      exit 0
    fi
    need_scripts
    # the stand-in kubelet needs a Python with the kubernetes client: the one Nexus is installed in
    export TESTBED_PYTHON=${TESTBED_PYTHON:-$(command -v python3 || command -v python)}
    export TESTBED_FAIL_IMAGE=${TESTBED_FAIL_IMAGE:-nexus-crashloop}
    t0=$SECONDS
    [ -x "$STATE/bin/kube-apiserver" ] || echo "testbed: building it first (once; cached in $STATE)"
    bash "$SCRIPTS/start-cluster.sh"
    mkdir -p "$STATE/run" && touch "$FLAG"
    echo "testbed started in $((SECONDS - t0)) s: export KUBECONFIG=$KUBECONFIG_FILE"
    ;;
  stop)
    if [ -f "$FLAG" ] || [ "${2:-}" = --force ]; then
      need_scripts
      bash "$SCRIPTS/stop-cluster.sh" --wipe
      rm -f "$FLAG"
    elif running; then
      echo "testbed: not started by scripts/testbed.sh, left running (stop it with: $0 stop --force)"
    fi
    ;;
  env)
    echo "export KUBECONFIG=$KUBECONFIG_FILE"
    ;;
  *)
    echo "usage: $0 build|start|stop [--force]|env|scripts" >&2
    exit 2
    ;;
esac
