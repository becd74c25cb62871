#!/usr/bin/env bash
# Runs every test of the workspace after installing what the tests need:
# Debian packages (python3-venv, curl, haproxy, slowhttptest, systemd for
# `systemd-analyze verify` of the unit in deploy/, prometheus for
# promtool, chromium and Node.js for the stats page's browser test), the
# official OpenAI and Anthropic Python SDKs plus the h2 package (the HTTP/2
# attacker of tests/python/h2_attack.py) in a virtualenv under target/, and
# playwright-core (no browser download: it drives Debian's chromium) in
# tests/browser/node_modules. Safe to run again; it only installs what is
# missing. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

venv=target/test-venv
missing=()
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The differential tests run the same .cfg under HAProxy.
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
# `promtool check metrics` checks the /metrics exposition.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The slow-client tests (tests/e2e/slowloris.rs) run slowhttptest.
command -v slowhttptest >/dev/null 2>&1 || missing+=(slowhttptest)
# The systemd unit in deploy/ is checked by `systemd-analyze verify`.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The stats page test (tests/e2e/stats_page.rs) drives a real browser.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
# Debian's npm conflicts with a Node.js that bundles its own (NodeSource's):
# asked for only when there is none.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! "$venv/bin/python" -c "import openai, anthropic, h2" >/dev/null 2>&1; then
    echo "tests/run.sh: creating $venv with the openai and anthropic SDKs and h2"
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check openai anthropic h2
fi
export LLMGW_TEST_PYTHON="$PWD/$venv/bin/python"

# playwright-core for tests/browser/stats_page.mjs, as the lockfile pins it;
# reinstalled only when the lockfile changed since the last `npm ci`.
browser=tests/browser
if ! cmp -s "$browser/package-lock.json" "$browser/node_modules/.llmgw-lock" 2>/dev/null; then
    echo "tests/run.sh: npm ci in $browser"
    (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.llmgw-lock)
fi

# The end-to-end tests start the real binary; build it first.
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary,
# the last of which is often an empty doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
