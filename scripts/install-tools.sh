#!/usr/bin/env bash
# Tools the tests run that are not Python packages (those come from pyproject's dev extra):
# promtool, from Debian's prometheus package, and an old release's Kubernetes schemas. Idempotent and quiet: a tool already on PATH is
# left alone, and apt's output is shown only when it fails. CI calls it before the tests.
set -euo pipefail

# The official schemas of the oldest Kubernetes the manifests support (OLDEST_K8S_VERSION in
# generator/k8s_schema.py; docs/deploy.md), which the current kubernetes-validate no longer
# ships: its 1.23 release, unpacked into the user's cache for tests/test_k8s_schema.py.
oldest=${XDG_CACHE_HOME:-$HOME/.cache}/nexus-tools/kubernetes-validate-1.23
if [[ ! -d $oldest/kubernetes_validate ]]; then
    python3 -m pip install -q --no-deps --target "$oldest" 'kubernetes-validate==1.23.4' >/dev/null 2>&1 ||
        python3 -m pip install --no-deps --target "$oldest" 'kubernetes-validate==1.23.4'
fi

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
((${#missing[@]})) || exit 0

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-install-recommends: promtool and the server binary, not the exporters and web assets
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-tools: could not install ${missing[*]}" >&2
    exit 1
fi
