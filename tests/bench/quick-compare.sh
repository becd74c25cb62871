#!/usr/bin/env bash
# A first side-by-side throughput figure: wrk -t1 -c64 through llmgw and
# through HAProxy (Debian package, nbthread 1), both proxying to the same
# mock upstream, in the same run. Small POST chat completions, keep-alive;
# llmgw has a body `model` routing rule active, HAProxy routes on path only.
# Prints each result and llmgw's ratio to HAProxy, median of RUNS runs.
#
#   tests/bench/quick-compare.sh            # RUNS=3 DURATION=10s by default
#
# The full harness (latency, instructions/request, streams, TLS) is issue 3.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
cargo build --release -p llmgw >&2
bin=target/release/llmgw
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); GW=$(port); HA=$(port)

# The upstream gets a core of its own where possible; the proxies and wrk
# share the other (taskset keeps runs comparable on 2-core machines).
taskset -c 1 "$bin" mock-upstream --listen 127.0.0.1:$UP --threads 1 >/dev/null & pids+=($!)

cat > "$work/llmgw.toml" <<TOML
[global]
nbthread = 1
maxconn = 5000
[[frontend]]
name = "bench"
bind = ["127.0.0.1:$GW"]
default_backend = "mock"
[[frontend.route]]
backend = "mock"
model_prefix = "gpt-"
[[backend]]
name = "mock"
[[backend.server]]
name = "m1"
address = "127.0.0.1:$UP"
TOML
taskset -c 0 "$bin" run -c "$work/llmgw.toml" >/dev/null & pids+=($!)

cat > "$work/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 5000
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend bench
    bind 127.0.0.1:$HA
    use_backend mock if { path_beg /v1/ }
    default_backend mock
backend mock
    http-reuse always
    server m1 127.0.0.1:$UP
CFG
taskset -c 0 haproxy -f "$work/haproxy.cfg" >/dev/null 2>&1 & pids+=($!)

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
LUA

for p in $UP $GW $HA; do
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/health" && break; sleep 0.1; done
done

run() { taskset -c 0 wrk -t1 -c64 -d"$DURATION" -s "$work/post.lua" "http://127.0.0.1:$1/v1/chat/completions" | awk '/Requests\/sec/ {print $2}'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A res
for name in direct llmgw haproxy; do
    case $name in direct) p=$UP;; llmgw) p=$GW;; haproxy) p=$HA;; esac
    vals=()
    for _ in $(seq "$RUNS"); do vals+=("$(run $p)"); done
    res[$name]=$(printf '%s\n' "${vals[@]}" | median)
    echo "$name: ${vals[*]} -> median ${res[$name]} req/s" >&2
done
ratio=$(awk -v a="${res[llmgw]}" -v b="${res[haproxy]}" 'BEGIN {printf "%.2f", a/b}')
printf '| target | req/s (median of %s) | ratio to HAProxy |\n|---|---|---|\n' "$RUNS"
printf '| upstream direct | %s | |\n| llmgw (model rule) | %s | %s |\n| HAProxy %s (path rule) | %s | 1.00 |\n' \
    "${res[direct]}" "${res[llmgw]}" "$ratio" "$(haproxy -v | awk 'NR==1 {print $3}')" "${res[haproxy]}"
