#!/usr/bin/env bash
# Side-by-side benchmark: llmgw vs HAProxy 2.6 vs nginx, same mock upstream,
# same machine, same run (issue 3). Prints ONE Markdown table (median of RUNS
# runs, each proxy's ratio to HAProxy) and writes it as
# tests/bench/results/latest.md and latest.json.
#
#   tests/bench/compare.sh                          # everything, RUNS=3 DURATION=10s
#   RUNS=1 DURATION=3s tests/bench/compare.sh       # quick pass
#   ROWS=throughput,latency tests/bench/compare.sh  # some rows only
#   tests/bench/compare.sh streams                  # rows may also be given as arguments
#
# llmgw and HAProxy run from one generated HAProxy .cfg wherever both can
# serve it (see "configs" below and the README).
#
# Rows: throughput (wrk -t1 -c64, 1 and 2 proxy threads, plus 1 thread with
# llmgw and HAProxy both routing on the body model), latency (oha -q RATE
# --latency-correction; skipped loudly if oha is missing), cpu (instructions
# per request via perf, else callgrind, plus task-clock per 1k requests),
# streams (STREAMS concurrent SSE streams: RSS per stream, inter-event gaps),
# tls (full / resumed handshakes/s, RSA-2048 and ECDSA P-256; h2 over TLS
# keep-alive), idle (RSS after start, binary size), failover (client-visible
# errors while an upstream dies and comes back), stick (stick tables: req/s
# and memory per entry), reload (failed requests while the proxy is reloaded
# RELOADS times under oha -q RELOAD_RATE: HAProxy `-sf` with and without `-x`,
# llmgw SIGHUP and a new llmgw process with the same `-x`/`-sf` flags).
#
# Environment:
#   LLMGW_BIN   llmgw binary (default: target/release/llmgw of this checkout,
#               built with `cargo build --release -p llmgw` if missing)
#   RUNS=3 DURATION=10s ROWS=all RATE=5000 STREAMS=5000,9000 STREAM_DELAY_MS=1000
#   STREAM_HOLD=10 CPU_REQUESTS=20000 CALLGRIND_REQUESTS=2000 TLS_REQUESTS=3000
#   FAILOVER_RATE=2000 FAILOVER_S=20 RELOAD_RATE=2000 RELOAD_S=14 RELOADS=10
#   RELOAD_CLIENTS=keep-alive,close
#   PROXIES=llmgw,haproxy,nginx   NO_INSTALL=1 (never apt-get / cargo install)
#   OUT=tests/bench/results   KEEP_OTHER_ROWS=1 (rerun ROWS, keep the other rows of $OUT/latest.*)
#
# Placement on a 2-core machine: the mock upstream (and the SSE client) on
# core 1; proxies and load generators on core 0 for the 1-thread rows; the
# 2-thread rows let the proxy use both cores. Loopback only; every process
# started here is killed on exit.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
ROWS=${ROWS:-${1:-all}}
[ "$ROWS" = all ] && ROWS=throughput,latency,cpu,streams,tls,idle,failover,stick,reload
RATE=${RATE:-5000}
STREAMS=${STREAMS:-5000,9000}
STREAM_DELAY_MS=${STREAM_DELAY_MS:-1000}
STREAM_HOLD=${STREAM_HOLD:-10}
FAILOVER_RATE=${FAILOVER_RATE:-2000}
FAILOVER_S=${FAILOVER_S:-20}
RELOAD_RATE=${RELOAD_RATE:-2000}
RELOAD_S=${RELOAD_S:-14}
RELOADS=${RELOADS:-10}
RELOAD_CLIENTS=${RELOAD_CLIENTS:-keep-alive,close}
CPU_REQUESTS=${CPU_REQUESTS:-20000}
CALLGRIND_REQUESTS=${CALLGRIND_REQUESTS:-2000}
TLS_REQUESTS=${TLS_REQUESTS:-3000}
PROXIES=${PROXIES:-llmgw,haproxy,nginx}
OUT=${OUT:-$here/results}
CORE_PROXY=${CORE_PROXY:-0}
CORE_UP=${CORE_UP:-1}
ncpu=$(nproc)
[ "$ncpu" -lt 2 ] && CORE_UP=0
dur_s=${DURATION%s}

log() { printf '[compare] %s\n' "$*" >&2; }
loud() { printf '\n[compare] !!!!! %s !!!!!\n\n' "$*" >&2; note "$*"; }
has_row() { [[ ",$ROWS," == *",$1,"* ]]; }
has_proxy() { [[ ",$PROXIES," == *",$1,"* ]]; }

# ---------------------------------------------------------------- setup ----
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
work=$(mktemp -d /tmp/llmgw-bench.XXXXXX)
# Every llmgw is a cluster of one: its Raft log in a data directory of its
# own (a fresh one per start: one with history would serve its committed
# configuration), its gRPC port any free one.
export LLMGW_CLUSTER_ADDR=127.0.0.1:0
fresh_data_dir() { LLMGW_DATA_DIR=$(mktemp -d "$work/llmgw-data.XXXXXX"); export LLMGW_DATA_DIR; }
samples=$work/samples.tsv; notes=$work/notes.txt
: > "$samples"; : > "$notes"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.3
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { printf '%s\n' "$*" >> "$notes"; }
# sample ROW METRIC UNIT BETTER(hi|lo) PROXY VALUE
sample() {
    [ -n "${6:-}" ] || { log "no value for $1/$2/$5"; return; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$samples"
    log "$1 / $2 / $5: $6 $3"
}

install_missing() {
    [ -n "${NO_INSTALL:-}" ] && return
    local sudo="" need=()
    [ "$(id -u)" = 0 ] || sudo="sudo"
    command -v haproxy >/dev/null || need+=(haproxy)
    command -v nginx >/dev/null || need+=(nginx-light)
    command -v wrk >/dev/null || need+=(wrk)
    command -v h2load >/dev/null || need+=(nghttp2-client)
    command -v openssl >/dev/null || need+=(openssl)
    command -v perf >/dev/null || need+=(linux-perf)
    command -v valgrind >/dev/null || need+=(valgrind)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing ${need[*]}"
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
    fi
    if ! command -v oha >/dev/null && [ ! -x "$HOME/.cargo/bin/oha" ]; then
        log "oha missing: 'cargo install oha --locked' started in the background (log: /tmp/llmgw-oha-install.log); the latency row is skipped until it is installed"
        ( flock /tmp/llmgw-cargo.lock cargo install oha --locked >/tmp/llmgw-oha-install.log 2>&1 & )
    fi
}
install_missing
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")

BIN=${LLMGW_BIN:-$root/target/release/llmgw}
if [ ! -x "$BIN" ]; then
    log "building $BIN"
    (cd "$root" && flock /tmp/llmgw-cargo.lock cargo build --release -p llmgw >&2) || { log "build failed"; exit 1; }
fi
log "llmgw: $BIN ($("$BIN" --version 2>/dev/null))"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT [TIMEOUT_S]
    local i n=$(( ${2:-10} * 20 ))
    for ((i = 0; i < n; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    log "port $1 did not open"; return 1
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
rss_kib() { # PID... -> summed VmRSS
    local t=0 p v
    for p in "$@"; do v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null); t=$((t + ${v:-0})); done
    echo $t
}
killwait() { local p; for p in "$@"; do kill "$p" 2>/dev/null; done; for p in "$@"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; kill -9 "$p" 2>/dev/null; done; return 0; }

BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
printf '%s' "$BODY" > "$work/body.json"
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
LUA

# ------------------------------------------------------------ processes ----
UP=""; UP_PID=""
start_mock() { # start the mock upstream once, on its own core
    [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null && return
    UP=$(port)
    taskset -c "$CORE_UP" "$BIN" mock-upstream --listen "127.0.0.1:$UP" --threads 1 >/dev/null 2>"$work/mock.err" &
    UP_PID=$!; pids+=("$UP_PID")
    wait_port "$UP" || { cat "$work/mock.err" >&2; exit 1; }
}

gen_certs() {
    [ -f "$work/rsa.pem" ] && return
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/rsa.key" -out "$work/rsa.pem" -days 2 -subj /CN=localhost 2>/dev/null
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/ecdsa.key" -out "$work/ecdsa.pem" -days 2 -subj /CN=localhost 2>/dev/null
    local k; for k in rsa ecdsa; do cat "$work/$k.pem" "$work/$k.key" > "$work/$k.bundle.pem"; done
}

# ------------------------------------------------------------ configs ----
# HAProxy and llmgw are started from ONE generated HAProxy-syntax .cfg wherever
# both can serve it (llmgw with `run -c FILE.cfg`, strict: no --lenient, so any
# directive llmgw does not support fails the run instead of being ignored).
# The file is written once per (variant, threads, TLS, maxconn) with its own
# port, kept in FILE.port, and both proxies are started, one after the other,
# from that very file; the log line "config ... sha256 ..." shows it.
# nginx keeps its own nginx.conf.
#
# Where one file cannot serve both, the configs differ, and only by the lines
# named here:
#  - throughput headline (CONF=headline): llmgw routes on the body model with
#    its native TOML (`model_prefix = "gpt-"`), HAProxy on the path — the
#    deliberate headline. The extra row CONF=model runs both from one .cfg that
#    routes on the body model (`option http-buffer-request` +
#    `req.body,json_query('$.model') -m beg gpt-`, HAProxy 2.6 does it).
#  - `http-reuse always` is in the shared file (llmgw accepts it; it always
#    pools upstream connections). It matters for HAProxy with a new client
#    connection per request (~30% slower with its default `safe`, plain HTTP,
#    h2load conn: close), so the tls rows share the file too.
#    LLMGW_ACCEPTS_HTTP_REUSE= (empty) leaves the line out, as for llmgw
#    builds older than the `http-reuse` support.
#  - TLS with resumption off: `no-tls-tickets` on the bind and
#    `tune.ssl.cachesize 0` in global, in the shared file for both.
LLMGW_ACCEPTS_HTTP_REUSE=${LLMGW_ACCEPTS_HTTP_REUSE-1}

# shared_cfg VARIANT(path|model|stick|stickmem) THREADS TLS MAXCONN [RESUME(on|off)] -> path of the .cfg (port in PATH.port)
#   stick: path routing + a tracked source address with two counters and a
#   deny rule that never fires; stickmem: one entry per request (x-key header)
shared_cfg() {
    local variant=$1 th=$2 tls=$3 maxconn=$4 resume=${5:-on} p
    local f=$work/shared-$variant-$th-$tls-$maxconn-$resume.cfg
    if [ ! -f "$f" ]; then
        p=$(port)
        local bindopt="" route="    use_backend mock if { path_beg /v1/ }" reuse="" nl=$'\n'
        [ "$tls" != none ] && bindopt=" ssl crt $work/$tls.bundle.pem alpn h2,http/1.1"
        local tune=""
        [ "$tls" != none ] && [ "$resume" = off ] && { bindopt+=" no-tls-tickets"; tune="$nl    tune.ssl.cachesize 0"; }
        [ "$variant" = stick ] && route="    stick-table type ip size 100k expire 30s store http_req_rate(10s),conn_cur
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc0_http_req_rate gt 1000000000 }
$route"
        [ "$variant" = stickmem ] && route="    stick-table type string len 32 size 1m expire 10m store http_req_rate(10s),conn_cur
    http-request track-sc0 req.hdr(x-key)
$route"
        [ "$variant" = model ] && route="    option http-buffer-request
    use_backend mock if { req.body,json_query('\$.model') -m beg gpt- }"
        [ -n "$LLMGW_ACCEPTS_HTTP_REUSE" ] && reuse="$nl    http-reuse always"
        cat > "$f" <<CFG
# generated by tests/bench/compare.sh: served as is by HAProxy (haproxy -f) and llmgw (llmgw run -c)
global
    nbthread $th
    maxconn $maxconn$tune
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend bench
    bind 127.0.0.1:$p$bindopt
$route
    default_backend mock
backend mock$reuse
    server m1 127.0.0.1:$UP
CFG
        echo "$p" > "$f.port"
    fi
    echo "$f"
}

# failover_cfg -> the one .cfg of the failover row (three upstreams FO_UP[0..2],
# HAProxy's retries 3 / option redispatch / retry-on all-retryable-errors, and
# the same active checks for both proxies)
failover_cfg() {
    local f=$work/failover.cfg p
    if [ ! -f "$f" ]; then
        p=$(port)
        cat > "$f" <<CFG
# generated by tests/bench/compare.sh (failover row): served as is by HAProxy (haproxy -f) and llmgw (llmgw run -c)
global
    nbthread 1
    maxconn 5000
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
    retry-on all-retryable-errors
frontend bench
    bind 127.0.0.1:$p
    default_backend pool
backend pool
    balance roundrobin
    option httpchk GET /v1/models
    default-server check inter 1s fall 2 rise 2
    server m1 127.0.0.1:${FO_UP[0]}
    server m2 127.0.0.1:${FO_UP[1]}
    server m3 127.0.0.1:${FO_UP[2]}
CFG
        echo "$p" > "$f.port"
    fi
    echo "$f"
}

# proxy_conf NAME THREADS PORT TLS(none|rsa|ecdsa) RESUME(on|off) MAXCONN -> config path
# CONF (environment) = path (default) | headline | model, see above. For a
# shared .cfg the port is the file's own (PATH.port), not PORT.
proxy_conf() {
    local name=$1 th=$2 p=$3 tls=$4 resume=$5 maxconn=$6 f="" conf=${CONF:-path}
    if [ "$conf" = failover ] && [ "$name" != nginx ]; then failover_cfg; return; fi
    case $name in
    llmgw)
        if [ "$conf" != headline ]; then shared_cfg "$conf" "$th" "$tls" "$maxconn" "$resume"; return; fi
        # the throughput headline: llmgw routes on the body model (native TOML)
        f=$work/llmgw-$th-$tls.toml
        {
            printf '[global]\nnbthread = %s\nmaxconn = %s\n\n[[frontend]]\nname = "bench"\ndefault_backend = "mock"\n' "$th" "$maxconn"
            if [ "$tls" = none ]; then
                printf 'bind = ["127.0.0.1:%s"]\n' "$p"
            else
                printf '[[frontend.bind]]\naddress = "127.0.0.1:%s"\ntls = { cert = "%s", key = "%s", alpn = ["h2", "http/1.1"] }\n' \
                    "$p" "$work/$tls.pem" "$work/$tls.key"
            fi
            printf '[[frontend.route]]\nbackend = "mock"\nmodel_prefix = "gpt-"\n\n'
            printf '[[backend]]\nname = "mock"\n[[backend.server]]\nname = "m1"\naddress = "127.0.0.1:%s"\n' "$UP"
        } > "$f" ;;
    haproxy)
        local shared; shared=$(shared_cfg "${conf/headline/path}" "$th" "$tls" "$maxconn" "$resume")
        if [ "$tls" = none ] || [ -n "$LLMGW_ACCEPTS_HTTP_REUSE" ]; then echo "$shared"; return; fi
        # tls rows: the shared .cfg plus the HAProxy-only lines (see above)
        f=$work/haproxy-$th-$tls-$resume.cfg
        sed -e "1s|.*|# generated by tests/bench/compare.sh: HAProxy only = $(basename "$shared") + the HAProxy-only lines (see compare.sh)|" \
            -e '/^backend mock$/a\    http-reuse always' "$shared" | awk '!(/http-reuse always/ && seen++)' > "$f"
        cp "$shared.port" "$f.port" ;;
    nginx)
        f=$work/nginx-$th-$tls-$resume.conf
        mkdir -p "$work/nginx"
        local listen="listen 127.0.0.1:$p;" ssl=""
        if [ "$tls" != none ]; then
            listen="listen 127.0.0.1:$p ssl http2;"
            ssl="ssl_certificate $work/$tls.pem; ssl_certificate_key $work/$tls.key;"
            if [ "$resume" = off ]; then ssl+=" ssl_session_cache off; ssl_session_tickets off;"
            else ssl+=" ssl_session_cache shared:SSL:10m; ssl_session_tickets on;"; fi
        fi
        cat > "$f" <<CFG
worker_processes $th;
worker_rlimit_nofile $(ulimit -Hn);
daemon off;
pid $work/nginx/nginx-$p.pid;
error_log $work/nginx/error.log error;
events { worker_connections $maxconn; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
    keepalive_requests 1000000;
    upstream mock { server 127.0.0.1:$UP; keepalive 256; }
    server {
        $listen
        $ssl
        location /v1/ {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }
        location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CFG
        ;;
    esac
    echo "$f"
}

# start_proxy NAME THREADS [TLS=none] [RESUME=on] [MAXCONN=5000] [WRAP...]
# sets P_PORT, P_PID (the process to signal) and P_PIDS (the processes doing the work)
start_proxy() {
    local name=$1 th=$2 tls=${3:-none} resume=${4:-on} maxconn=${5:-5000}; shift 5 2>/dev/null || shift $#
    local cores=$CORE_PROXY f
    [ "$th" -gt 1 ] && cores=0-$((ncpu - 1))
    P_PORT=$(port)
    f=$(proxy_conf "$name" "$th" "$P_PORT" "$tls" "$resume" "$maxconn")
    if [ "$name" != direct ]; then
        [ -f "$f.port" ] && P_PORT=$(cat "$f.port")
        log "config $name: $(basename "$f") sha256 $(sha256sum "$f" | cut -c1-12)"
    fi
    case $name in
    direct) P_PORT=$UP; P_PID=$UP_PID; P_PIDS=$UP_PID; return 0 ;;
    llmgw) fresh_data_dir; taskset -c "$cores" "$@" "$BIN" run -c "$f" >"$work/$name.out" 2>&1 & ;;
    haproxy) taskset -c "$cores" "$@" haproxy -f "$f" >"$work/$name.out" 2>&1 & ;;
    nginx) taskset -c "$cores" "$@" nginx -p "$work/nginx" -c "$f" ${NGINX_G:+-g "$NGINX_G"} >"$work/$name.out" 2>&1 & ;;
    esac
    P_PID=$!; pids+=("$P_PID")
    if ! wait_port "$P_PORT" "${WAIT_S:-10}"; then
        log "$name did not start:"; tail -5 "$work/$name.out" >&2; killwait "$P_PID"; return 1
    fi
    P_PIDS=$P_PID
    if [ "$name" = nginx ]; then
        sleep 0.2
        local kids; kids=$(pgrep -P "$P_PID" | paste -sd' ')
        # nginx: the workers do the work (RSS is reported for master + workers)
        P_PIDS="$P_PID $kids"; P_WORKERS=$kids
    else
        P_WORKERS=$P_PID
    fi
}
stop_proxy() { [ "$P_PID" = "$UP_PID" ] || killwait $P_PIDS; }

targets() { # the proxies to measure, optionally with "direct" first
    local t=() p
    [ "${1:-}" = direct ] && t+=(direct)
    for p in llmgw haproxy nginx; do has_proxy $p && t+=("$p"); done
    echo "${t[@]}"
}

# ------------------------------------------------------------------ rows ----
row_throughput() {
    log "== throughput: wrk -t1 -c64 -d$DURATION, POST chat completion, keep-alive"
    start_mock
    local th name r v conf metric
    # headline: llmgw routes on the body model (native TOML), HAProxy and nginx
    # on the path; then "model": llmgw and HAProxy from one .cfg, both routing
    # on the body model (nginx cannot: no column)
    # Runs interleave (run 1 of every proxy, then run 2 of every proxy, ...):
    # this machine's noise drifts over minutes, and back-to-back runs of one
    # proxy put all of a bad minute on it alone.
    for conf in headline model; do
        for th in 1 2; do
            [ "$conf" = model ] && [ "$th" = 2 ] && continue
            for ((r = 0; r < RUNS; r++)); do
                for name in $(targets direct); do
                    [ "$name" = direct ] && [ "$th" = 2 ] && continue
                    if [ "$conf" = model ] && [ "$name" != llmgw ] && [ "$name" != haproxy ]; then continue; fi
                    CONF=$conf start_proxy "$name" "$th" || continue
                    metric="req/s, $th thread$([ "$th" = 1 ] || echo s)"
                    [ "$conf" = model ] && metric="req/s, 1 thread, both route on the body model (one .cfg)"
                    v=$(taskset -c "$CORE_PROXY" wrk -t1 -c64 -d"$DURATION" -s "$work/post.lua" "http://127.0.0.1:$P_PORT/v1/chat/completions" 2>&1 | tee "$work/wrk.out" |
                        awk '/Requests\/sec/ {print $2}')
                    local errs; errs=$(awk '/Non-2xx|Socket errors/ {print}' "$work/wrk.out")
                    [ -n "$errs" ] && { log "$name: $errs"; note "throughput $name ${th}t $conf: wrk reported: $(echo $errs)"; }
                    sample throughput "$metric" "req/s" hi "$name" "$v"
                    stop_proxy
                done
            done
        done
    done
    note "throughput: wrk -t1 -c64 -d$DURATION, runs interleaved across proxies (a fresh process per run); headline rows: llmgw routes on the body model (native TOML, model_prefix = \"gpt-\"), HAProxy (shared path-routing .cfg) and nginx on the path; 'both route on the body model': llmgw and HAProxy started from the same .cfg with option http-buffer-request + use_backend mock if { req.body,json_query('\$.model') -m beg gpt- }; 1-thread rows: proxy and wrk on core $CORE_PROXY, mock on core $CORE_UP; 2-thread rows: proxy free on all $ncpu cores (nbthread 2 / worker_processes 2)."
}

row_latency() {
    if [ ! -x "$OHA" ]; then
        loud "latency row SKIPPED: oha is not installed (cargo install oha --locked; see /tmp/llmgw-oha-install.log)"
        return
    fi
    log "== latency: oha -q $RATE --latency-correction -z $DURATION -c 64"
    start_mock
    local name r json
    for name in $(targets direct); do
        start_proxy "$name" 1 || continue
        for ((r = 0; r < RUNS; r++)); do
            json=$(taskset -c "$CORE_PROXY" "$OHA" --no-tui --output-format json -q "$RATE" --latency-correction -z "$DURATION" -c 64 -m POST \
                -H 'content-type: application/json' -d "$BODY" "http://127.0.0.1:$P_PORT/v1/chat/completions" 2>"$work/oha.err")
            local line
            line=$(python3 - "$json" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
p = d.get("latencyPercentiles", {})
s = d.get("summary", {})
codes = d.get("statusCodeDistribution", {})
errs = d.get("errorDistribution", {})
non2xx = sum(v for k, v in codes.items() if not k.startswith("2"))
# requests cut off by the end of the -z window are not the proxy's errors
errs = {k: v for k, v in errs.items() if "deadline" not in k.lower() and "abort" not in k.lower()}
print(p.get("p50", 0) * 1000, p.get("p99", 0) * 1000, p.get("p99.9", 0) * 1000, s.get("requestsPerSec", 0), sum(errs.values()) + non2xx, json.dumps(errs).replace(" ", "_"))
PY
            ) || { log "oha failed: $(tail -3 "$work/oha.err")"; continue; }
            read -r p50 p99 p999 rps errs kinds <<<"$line"
            sample latency "p50" ms lo "$name" "$p50"
            sample latency "p99" ms lo "$name" "$p99"
            sample latency "p99.9" ms lo "$name" "$p999"
            sample latency "achieved rate" "req/s" hi "$name" "$rps"
            [ "${errs%.*}" != 0 ] && note "latency $name: $errs errors / non-2xx answers $kinds"
            printf '%s %s %s %s\n' "$name" "$p50" "$p99" "$p999" >> "$work/lat.raw"
        done
        stop_proxy
    done
    # added latency over the upstream called directly, from the medians
    python3 - "$work/lat.raw" >> "$samples" <<'PY'
import statistics, sys
rows = {}
for l in open(sys.argv[1]):
    n, *v = l.split(); rows.setdefault(n, []).append([float(x) for x in v])
if "direct" in rows:
    d = [statistics.median(c) for c in zip(*rows["direct"])]
    for n, runs in rows.items():
        if n == "direct": continue
        m = [statistics.median(c) for c in zip(*runs)]
        for name, a, b in zip(["p50", "p99", "p99.9"], m, d):
            print(f"latency\tadded {name} over direct\tms\tlo\t{n}\t{a - b}")
PY
    note "latency: oha -q $RATE --latency-correction -c 64 -z $DURATION, POST chat completion, 1 proxy thread; added = proxy median − direct median."
}

# measure_cpu NAME: instructions (perf or callgrind) and task-clock per request
row_cpu() {
    log "== cpu: cost per proxied request"
    start_mock
    local perf_ok="" trace_ok=""
    perf stat -e instructions -x, true 2>&1 | grep -q '^[0-9]' && perf_ok=1
    # System calls per request (a tracepoint: needs root or a permissive
    # perf_event_paranoid); with the user/system split below it shows
    # where a request's CPU goes, and what the proxy's own code can move.
    perf stat -e raw_syscalls:sys_enter -x, true 2>&1 | grep -q '^[0-9]' && trace_ok=1
    local name r
    for name in $(targets); do
        start_proxy "$name" 1 || continue
        local h2="h2load --h1 -c 16 -d $work/body.json -H content-type:application/json"
        taskset -c "$CORE_PROXY" $h2 -n 2000 "http://127.0.0.1:$P_PORT/v1/chat/completions" >/dev/null 2>&1  # warm-up
        for ((r = 0; r < RUNS; r++)); do
            local events=task-clock,context-switches; [ -n "$perf_ok" ] && events=instructions,$events
            [ -n "$trace_ok" ] && events=$events,raw_syscalls:sys_enter
            perf stat -e "$events" -x, -o "$work/perf.out" -p "$(echo $P_WORKERS | tr ' ' ,)" &
            local sp=$!; sleep 0.3
            local ticks0; ticks0=$(cpu_ticks $P_WORKERS)
            taskset -c "$CORE_PROXY" $h2 -n "$CPU_REQUESTS" "http://127.0.0.1:$P_PORT/v1/chat/completions" >"$work/h2load.out" 2>&1
            local ticks1; ticks1=$(cpu_ticks $P_WORKERS)
            kill -INT $sp; wait $sp 2>/dev/null
            # utime and stime from /proc (clock ticks), per request.
            local hz; hz=$(getconf CLK_TCK)
            sample cpu "user time per request" us lo "$name" "$(echo "$ticks0 $ticks1" | awk -v n="$CPU_REQUESTS" -v hz="$hz" '{print ($3 - $1) / hz / n * 1e6}')"
            sample cpu "system time per request" us lo "$name" "$(echo "$ticks0 $ticks1" | awk -v n="$CPU_REQUESTS" -v hz="$hz" '{print ($4 - $2) / hz / n * 1e6}')"
            local cs sc
            cs=$(awk -F, '$3 ~ /context-switches/ {print $1}' "$work/perf.out")
            sc=$(awk -F, '$3 ~ /raw_syscalls/ {print $1}' "$work/perf.out")
            [ -n "$cs" ] && sample cpu "context switches per 1k requests" n lo "$name" "$(awk -v t="$cs" -v n="$CPU_REQUESTS" 'BEGIN {print t / n * 1000}')"
            [ -n "$trace_ok" ] && [ -n "$sc" ] && sample cpu "system calls per request" n lo "$name" "$(awk -v t="$sc" -v n="$CPU_REQUESTS" 'BEGIN {print t / n}')"
            local ok; ok=$(awk '/^requests:/ {print $8}' "$work/h2load.out")
            [ "${ok:-0}" = "$CPU_REQUESTS" ] || note "cpu $name: only ${ok:-0}/$CPU_REQUESTS requests succeeded"
            local tc ins
            tc=$(awk -F, '$3 ~ /task-clock/ {print $1}' "$work/perf.out")
            ins=$(awk -F, '$3 ~ /instructions/ {print $1}' "$work/perf.out")
            [ -n "$tc" ] && sample cpu "task-clock per 1k requests" ms lo "$name" "$(awk -v t="$tc" -v n="$CPU_REQUESTS" 'BEGIN {print t / n * 1000}')"
            [ -n "$perf_ok" ] && [ -n "$ins" ] && sample cpu "instructions per request (perf)" instr lo "$name" "$(awk -v t="$ins" -v n="$CPU_REQUESTS" 'BEGIN {print t / n}')"
        done
        stop_proxy
        if [ -z "$perf_ok" ]; then cpu_callgrind "$name"; fi
    done
    note "cpu: user and system time per request are the proxy's utime and stime (/proc/PID/stat) over the same $CPU_REQUESTS POSTs; system calls per request count the raw_syscalls:sys_enter tracepoint (perf stat) and are left out where the tracepoint is not readable; context switches are perf's software counter."
    if [ -n "$perf_ok" ]; then note "cpu: perf stat -e instructions,task-clock on the proxy process over $CPU_REQUESTS POSTs (h2load --h1 -c 16)."
    else note "cpu: hardware counters are NOT available in this VM (perf stat -e instructions: <not supported>); instructions per request come from valgrind (cachegrind with --cache-sim=yes: Ir, the same count callgrind gives, and simulated L1 instruction and data misses, 32 KiB each; a run with 200+$CALLGRIND_REQUESTS POSTs minus a run with 200, divided by $CALLGRIND_REQUESTS; h2load --h1 -c 4; nginx with master_process off; valgrind serialises threads), and task-clock (software counter) per 1k requests over $CPU_REQUESTS POSTs, h2load --h1 -c 16."; fi
}

cpu_ticks() { # PID...: "utime stime" summed over the processes, in clock ticks
    local p u=0 st=0 a
    for p in "$@"; do
        read -r -a a < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo 0 0)
        u=$((u + a[0])); st=$((st + a[1]))
    done
    echo "$u $st"
}

cpu_callgrind() { # NAME: Ir and L1 misses per request under cachegrind = (X(N+warm) - X(warm)) / N, two runs of the proxy
    local name=$1 r
    command -v valgrind >/dev/null || { note "cpu: valgrind missing, no instruction counts"; return; }
    local h2="h2load --h1 -c 4 -d $work/body.json -H content-type:application/json"
    for ((r = 0; r < RUNS; r++)); do
        local n tot=() i1=() d1=() ok=()
        for n in 200 $((CALLGRIND_REQUESTS + 200)); do
            local cg=$work/cg.$name.$r.$n
            rm -f "$cg".*
            # cachegrind with its cache simulation: the same Ir as callgrind,
            # plus first-level instruction and data misses, the part of a
            # request's cost instruction counts do not show (code and state
            # spread over more cache lines cost more at the same Ir).
            local wrap=(valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file="$cg.%p")
            NGINX_G="master_process off;" WAIT_S=60 start_proxy "$name" 1 none on 5000 "${wrap[@]}" || return
            taskset -c "$CORE_PROXY" $h2 -n "$n" "http://127.0.0.1:$P_PORT/v1/chat/completions" >"$work/h2load.out" 2>&1
            ok+=("$(awk '/^requests:/ {print $8}' "$work/h2load.out")")
            stop_proxy
            # summary: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw
            tot+=("$(cat "$cg".* 2>/dev/null | awk '/^summary:/ {s = $2} END {print s+0}')")
            i1+=("$(cat "$cg".* 2>/dev/null | awk '/^summary:/ {s = $3} END {print s+0}')")
            d1+=("$(cat "$cg".* 2>/dev/null | awk '/^summary:/ {s = $6 + $9} END {print s+0}')")
        done
        if [ "${tot[0]}" -gt 0 ] && [ "${tot[1]}" -gt "${tot[0]}" ] && [ "${ok[1]}" = $((CALLGRIND_REQUESTS + 200)) ]; then
            sample cpu "instructions per request (valgrind)" instr lo "$name" "$(awk -v a="${tot[0]}" -v b="${tot[1]}" -v n="$CALLGRIND_REQUESTS" 'BEGIN {print (b - a) / n}')"
            sample cpu "L1 instruction-cache misses per request (cachegrind, 32 KiB)" misses lo "$name" "$(awk -v a="${i1[0]}" -v b="${i1[1]}" -v n="$CALLGRIND_REQUESTS" 'BEGIN {print (b - a) / n}')"
            sample cpu "L1 data-cache misses per request (cachegrind, 32 KiB)" misses lo "$name" "$(awk -v a="${d1[0]}" -v b="${d1[1]}" -v n="$CALLGRIND_REQUESTS" 'BEGIN {print (b - a) / n}')"
        else
            note "cpu $name: valgrind measurement failed (Ir ${tot[*]}, ok ${ok[*]})"
        fi
    done
}

row_streams() {
    log "== streams: ${STREAMS} concurrent SSE streams, an event every ${STREAM_DELAY_MS} ms, held ${STREAM_HOLD}s"
    start_mock
    local n name r
    for n in ${STREAMS//,/ }; do
        for name in $(targets direct); do
            local mc=$((n + 500)); [ "$name" = nginx ] && mc=$((2 * n + 500))
            for ((r = 0; r < RUNS; r++)); do
                # a fresh proxy per run: allocators keep memory after the streams close
                start_proxy "$name" 1 none on "$mc" || { note "streams $name @$n: proxy did not start with maxconn $mc"; continue; }
                sleep 1
                local res
                res=$(taskset -c "$CORE_UP" python3 "$here/sse_hold.py" --port "$P_PORT" --streams "$n" --delay-ms "$STREAM_DELAY_MS" \
                    --hold "$STREAM_HOLD" --pids "$(echo $P_PIDS | tr ' ' ,)" 2>"$work/sse.err")
                [ -n "$res" ] || { log "sse_hold failed: $(tail -3 "$work/sse.err")"; continue; }
                echo "$res" >> "$work/streams.raw"
                local line
                line=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["opened"], d["errors"], d["rss_per_stream_kib"] or 0, d["gap_p50_ms"] or 0, d["gap_p99_ms"] or 0, d["gap_p999_ms"] or 0, d["rss_streams_kib"], json.dumps(d["error_kinds"]).replace(" ",""))' "$res")
                read -r opened errs per g50 g99 g999 rss kinds <<<"$line"
                [ "$name" != direct ] && sample streams "RSS per stream @$n" KiB lo "$name" "$per"
                sample streams "errors @$n" count lo "$name" "$errs"
                sample streams "event gap p50 − nominal @$n" ms lo "$name" "$(awk -v g="$g50" -v d="$STREAM_DELAY_MS" 'BEGIN {print g - d}')"
                sample streams "event gap p99 − nominal @$n" ms lo "$name" "$(awk -v g="$g99" -v d="$STREAM_DELAY_MS" 'BEGIN {print g - d}')"
                sample streams "event gap p99.9 − nominal @$n" ms lo "$name" "$(awk -v g="$g999" -v d="$STREAM_DELAY_MS" 'BEGIN {print g - d}')"
                [ "$errs" != 0 ] && note "streams $name @$n run $r: $opened/$n opened, $errs errors $kinds"
                if [ "$name" != direct ]; then
                    sleep 2
                    local after; after=$(rss_kib $P_PIDS)
                    sample streams "RSS 2 s after the $n streams closed" MiB lo "$name" "$(awk -v k="$after" 'BEGIN {print k / 1024}')"
                fi
                stop_proxy
                sleep 1
            done
        done
    done
    note "streams: one process (tests/bench/sse_hold.py, core $CORE_UP) holds N streams through a 1-thread proxy; RSS per stream = (VmRSS with streams − VmRSS before) / streams (nginx: master + worker); gap − nominal = time between consecutive events on a stream minus the $STREAM_DELAY_MS ms the mock waits between events (the upstream-direct column is the client's own baseline; a proxy's added inter-event latency is its figure minus that one); nginx runs with proxy_buffering off."
}

stime_rate() { # PORT -> full handshakes/s from TLS_CLIENTS parallel `openssl s_time -new` (no session reuse)
    local k t0 t1 n=${TLS_CLIENTS:-4}
    t0=$(date +%s.%N)
    for ((k = 0; k < n; k++)); do
        taskset -c "$CORE_UP" openssl s_time -connect "127.0.0.1:$1" -new -time "$dur_s" >"$work/stime.$k" 2>&1 &
    done
    wait $(jobs -p | tail -n "$n") 2>/dev/null
    t1=$(date +%s.%N)
    cat "$work"/stime.* | awk -v w="$(echo "$t1 - $t0" | bc)" '/connections in .* real seconds/ {c += $1} END {if (c) print c / w}'
    rm -f "$work"/stime.*
}

row_tls() {
    command -v h2load >/dev/null || { loud "tls row SKIPPED: h2load missing"; return; }
    log "== tls: handshakes/s and h2 over TLS keep-alive"
    start_mock; gen_certs
    local name cert r resume v
    local h2="h2load -d $work/body.json -H content-type:application/json"
    for cert in rsa ecdsa; do
        local C=${cert^^}
        for name in $(targets); do
            for resume in off on; do
                start_proxy "$name" 1 "$cert" "$resume" || continue
                local url="https://localhost:$P_PORT/v1/chat/completions"
                for ((r = 0; r < RUNS; r++)); do
                    if [ "$resume" = off ]; then
                        sample tls "full handshakes/s, openssl s_time -new ×${TLS_CLIENTS:-4}, $C" "conn/s" hi "$name" "$(stime_rate "$P_PORT")"
                    fi
                    local ticks0 ticks1; ticks0=$(cpu_ticks $P_WORKERS)
                    v=$(taskset -c "$CORE_PROXY" $h2 --h1 -H 'connection: close' -c 16 -n "$TLS_REQUESTS" "$url" 2>&1 | tee "$work/h2load.out" | awk '/^finished in/ {print $4}')
                    ticks1=$(cpu_ticks $P_WORKERS)
                    local ok; ok=$(awk '/^requests:/ {print $8}' "$work/h2load.out")
                    [ "${ok:-0}" = "$TLS_REQUESTS" ] || note "tls $name $C resumption=$resume: ${ok:-0}/$TLS_REQUESTS requests succeeded"
                    if [ "$resume" = off ]; then sample tls "full handshakes/s, h2load conn: close, server resumption off, $C" "conn/s" hi "$name" "$v"
                    else sample tls "handshakes/s, h2load conn: close, resumption on (h2load resumes), $C" "conn/s" hi "$name" "$v"; fi
                    # The proxy's own CPU per connection: h2load shares the
                    # proxy's core, so the rate above also carries the
                    # client's half of every handshake; this does not.
                    [ "$resume" = off ] && sample tls "proxy CPU per full handshake + request (utime+stime), $C" us lo "$name" \
                        "$(echo "$ticks0 $ticks1" | awk -v n="$TLS_REQUESTS" -v hz="$(getconf CLK_TCK)" '{print ($3 + $4 - $1 - $2) / hz / n * 1e6}')"
                done
                if [ "$cert" = ecdsa ] && [ "$resume" = on ]; then
                    for ((r = 0; r < RUNS; r++)); do
                        v=$(taskset -c "$CORE_PROXY" $h2 -c 16 -m 10 -D "$dur_s" "$url" 2>&1 | tee "$work/h2load.out" | awk '/^finished in/ {print $4}')
                        grep -q 'h2' "$work/h2load.out" || true
                        sample tls "h2 over TLS keep-alive, h2load -c16 -m10, ECDSA" "req/s" hi "$name" "$v"
                    done
                fi
                stop_proxy
            done
        done
    done
    local reused; reused=$(tls_resumption_check)
    note "tls: TLS 1.3, 1 proxy thread, a new TLS connection per request. 'full, s_time': ${TLS_CLIENTS:-4} parallel 'openssl s_time -new' clients (never resume) on core $CORE_UP (the mock is idle then: s_time sends no request), connections / wall time. 'proxy CPU per full handshake': the proxy's utime + stime (/proc/PID/stat) over the 'full, h2load' run divided by its connections, each a full handshake and one proxied POST; it is what one proxy core can sustain (1e6 / it = connections per second), free of the load generator that shares the core in the rate rows. 'full, h2load': h2load --h1 -c 16 -n $TLS_REQUESTS with 'connection: close' against llmgw and HAProxy started from one .cfg with no-tls-tickets + tune.ssl.cachesize 0, and nginx with ssl_session_cache off + ssl_session_tickets off. 'resumption on': the same h2load command against each proxy's defaults (nginx with a shared session cache), and h2load resumes: $reused h2 keep-alive: h2load -c 16 -m 10 over TLS with ALPN h2 (proxies speak HTTP/1.1 to the mock)."
}

tls_resumption_check() { # does h2load resume sessions? ask nginx ($ssl_session_reused)
    has_proxy nginx || { echo "(h2load resumption not checked)"; return; }
    local f p
    p=$(port); f=$(proxy_conf nginx 1 "$p" ecdsa on 1024)
    sed -i "s|access_log off;|log_format r \"\$ssl_session_reused\"; access_log $work/nginx/reused.log r;|" "$f"
    : > "$work/nginx/reused.log"
    taskset -c "$CORE_PROXY" nginx -p "$work/nginx" -c "$f" >/dev/null 2>&1 & local np=$!; pids+=("$np")
    wait_port "$p" || { echo "(h2load resumption check failed)"; return; }
    h2load --h1 -H 'connection: close' -c 4 -n 200 "https://localhost:$p/health" >/dev/null 2>&1
    killwait "$np"
    local tot re
    tot=$(wc -l < "$work/nginx/reused.log"); re=$(grep -c '^r' "$work/nginx/reused.log")
    echo "Check: with resumption allowed by nginx, h2load resumed $re of $tot connections."
}

row_idle() {
    log "== idle footprint"
    start_mock
    local name r
    for name in $(targets); do
        for ((r = 0; r < RUNS; r++)); do
            start_proxy "$name" 1 || continue
            sleep 1
            sample idle "RSS after start (1 thread)" MiB lo "$name" "$(awk -v k="$(rss_kib $P_PIDS)" 'BEGIN {print k / 1024}')"
            stop_proxy
        done
    done
    for ((r = 0; r < RUNS; r++)); do
        has_proxy llmgw || break
        local p; p=$(port)
        fresh_data_dir; "$BIN" --bind "127.0.0.1:$p" >/dev/null 2>&1 & local ep=$!; pids+=("$ep")
        if wait_port "$p"; then sleep 1; sample idle "RSS after start, embedded default config" MiB lo llmgw "$(awk -v k="$(rss_kib $ep)" 'BEGIN {print k / 1024}')"; fi
        killwait "$ep"
    done
    local sz
    has_proxy llmgw && sample idle "binary size" MiB lo llmgw "$(stat -c %s "$BIN" | awk '{print $1 / 1048576}')"
    has_proxy haproxy && sample idle "binary size" MiB lo haproxy "$(stat -c %s "$(command -v haproxy)" | awk '{print $1 / 1048576}')"
    has_proxy nginx && sample idle "binary size" MiB lo nginx "$(stat -c %s "$(command -v nginx)" | awk '{print $1 / 1048576}')"
    note "idle: VmRSS 1 s after start with the bench config (nginx: master + 1 worker); binary size is the file on disk (HAProxy and nginx link OpenSSL/PCRE/… dynamically, llmgw is $(file -b "$BIN" | grep -q 'not stripped' && echo 'NOT stripped' || echo stripped))."
}

# Stick tables: throughput with a tracked key and two counters vs none (one
# .cfg per case for llmgw and HAProxy), and memory per table entry (a new
# key per request: RSS delta / entries).
row_stick() {
    log "== stick: wrk -t1 -c64 -d$DURATION with and without track-sc0 src; memory per entry"
    start_mock
    local name conf r v
    cat > "$work/keys.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
    n = n + 1
    wrk.headers["x-key"] = string.format("key-%08d", n)
    return wrk.format()
end
LUA
    for name in llmgw haproxy; do
        has_proxy "$name" || continue
        for conf in path stick; do
            CONF=$conf start_proxy "$name" 1 || continue
            for ((r = 0; r < RUNS; r++)); do
                v=$(taskset -c "$CORE_PROXY" wrk -t1 -c64 -d"$DURATION" -s "$work/post.lua" "http://127.0.0.1:$P_PORT/v1/chat/completions" 2>&1 | tee "$work/wrk.out" |
                    awk '/Requests\/sec/ {print $2}')
                grep -qE 'Non-2xx|Socket errors' "$work/wrk.out" && note "stick $name $conf: wrk reported: $(grep -E 'Non-2xx|Socket errors' "$work/wrk.out" | tr '\n' ' ')"
                sample stick "req/s, $([ "$conf" = stick ] && echo "track-sc0 src, 2 counters" || echo "no tracking")" "req/s" hi "$name" "$v"
                printf '%s %s %s\n' "$name" "$conf" "$v" >> "$work/stick.raw"
            done
            stop_proxy
        done
        for ((r = 0; r < RUNS; r++)); do
            CONF=stickmem start_proxy "$name" 1 || continue
            local before after n
            sleep 0.5
            before=$(rss_kib $P_PIDS)
            n=$(taskset -c "$CORE_PROXY" wrk -t1 -c16 -d3s -s "$work/keys.lua" "http://127.0.0.1:$P_PORT/v1/chat/completions" 2>&1 |
                awk '/requests in/ {print $1}')
            sleep 0.5
            after=$(rss_kib $P_PIDS)
            stop_proxy
            [ -n "$n" ] && [ "$n" -gt 0 ] && sample stick "memory per table entry (string key, 2 counters)" bytes lo "$name" "$(( (after - before) * 1024 / n ))"
        done
    done
    python3 - "$work/stick.raw" >> "$samples" <<'PY'
import statistics, sys
runs = {}
for l in open(sys.argv[1]):
    name, conf, v = l.split()
    runs.setdefault(name, {}).setdefault(conf, []).append(float(v))
for name, c in runs.items():
    if "path" in c and "stick" in c:
        print(f"stick\tthroughput with tracking / without\tx\thi\t{name}\t{statistics.median(c['stick']) / statistics.median(c['path'])}")
PY
    note "stick: the shared .cfg plus 'stick-table type ip size 100k expire 30s store http_req_rate(10s),conn_cur', 'http-request track-sc0 src', 'http-request deny deny_status 429 if { sc0_http_req_rate gt 1000000000 }' (never fires), for llmgw and HAProxy alike; memory: 'stick-table type string len 32 size 1m expire 10m store http_req_rate(10s),conn_cur' + 'track-sc0 req.hdr(x-key)', a new key per request (wrk -c16 -d3s), RSS delta / requests."
}

# Three upstreams behind one proxy at a fixed rate; the second is killed
# (SIGKILL) a quarter into the run and started again at half-time, on the
# same port. Client-visible errors = non-2xx answers + failed requests
# (streams cut short included), llmgw and HAProxy from the same .cfg.
FO_UP=(); FO_PID=()
start_fo_mock() { # INDEX
    local i=$1
    taskset -c "$CORE_UP" "$BIN" mock-upstream --listen "127.0.0.1:${FO_UP[$i]}" --name "m$((i + 1))" \
        --ttft-ms 20 --tokens 10 --token-delay-ms 5 >/dev/null 2>>"$work/fo-mock.err" &
    FO_PID[$i]=$!; pids+=("${FO_PID[$i]}")
    wait_port "${FO_UP[$i]}"
}
row_failover() {
    if [ ! -x "$OHA" ]; then
        loud "failover row SKIPPED: oha is not installed (cargo install oha --locked; see /tmp/llmgw-oha-install.log)"
        return
    fi
    log "== failover: 3 upstreams, oha -q $FAILOVER_RATE -z ${FAILOVER_S}s; m2 killed at $((FAILOVER_S / 4))s, restarted at $((FAILOVER_S / 2))s"
    local i kind name r json line body stream
    for i in 0 1 2; do FO_UP[$i]=$(port); start_fo_mock "$i" || return; done
    for kind in non-streaming streaming; do
        stream=false; [ "$kind" = streaming ] && stream=true
        body='{"model":"gpt-4o-mini","stream":'$stream',"messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
        for name in llmgw haproxy; do
            has_proxy "$name" || continue
            for ((r = 0; r < RUNS; r++)); do
                CONF=failover start_proxy "$name" 1 || continue
                # every server up (checked) before the load starts
                sleep 2.5
                taskset -c "$CORE_PROXY" "$OHA" --no-tui --output-format json -q "$FAILOVER_RATE" -z "${FAILOVER_S}s" -c 256 -m POST \
                    -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$P_PORT/v1/chat/completions" \
                    >"$work/fo.json" 2>"$work/fo.err" &
                local oha=$!
                sleep "$(awk -v s="$FAILOVER_S" 'BEGIN {print s / 4}')"
                kill -9 "${FO_PID[1]}"; wait "${FO_PID[1]}" 2>/dev/null
                sleep "$(awk -v s="$FAILOVER_S" 'BEGIN {print s / 4}')"
                start_fo_mock 1
                wait "$oha"
                stop_proxy
                line=$(python3 - "$work/fo.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d.get("statusCodeDistribution", {})
errs = d.get("errorDistribution", {})
non2xx = {k: v for k, v in codes.items() if not k.startswith("2")}
ok = sum(v for k, v in codes.items() if k.startswith("2"))
# requests cut off by the end of the -z window are not the proxy's errors
errs = {k: v for k, v in errs.items() if "deadline" not in k.lower() and "abort" not in k.lower()}
kinds = dict(errs, **{"HTTP " + k: v for k, v in non2xx.items()})
print(sum(errs.values()) + sum(non2xx.values()), ok, json.dumps(kinds).replace(" ", "_"))
PY
                ) || { log "oha output unreadable: $(tail -3 "$work/fo.err")"; continue; }
                local errs ok kinds
                read -r errs ok kinds <<<"$line"
                sample failover "client-visible errors, $kind" count lo "$name" "$errs"
                sample failover "requests answered 2xx, $kind" count hi "$name" "$ok"
                [ "$errs" != 0 ] && note "failover $name $kind run $((r + 1)): $errs errors $kinds"
            done
        done
    done
    note "failover: one .cfg for llmgw and HAProxy (retries 3, option redispatch, retry-on all-retryable-errors, option httpchk GET /v1/models, check inter 1s fall 2 rise 2, balance roundrobin); three mock upstreams (ttft 20 ms, 10 tokens 5 ms apart) on core $CORE_UP; oha -q $FAILOVER_RATE -c 256 -z ${FAILOVER_S}s; m2 SIGKILLed at $((FAILOVER_S / 4))s and restarted on its port at $((FAILOVER_S / 2))s; streaming = stream: true (an SSE stream in flight on m2 when it dies cannot be saved by any proxy)."
}

# Reload under load: one mock upstream, oha at a fixed rate (-n RATE×S, so
# every request is answered or failed, none cut off by a deadline) through
# one proxy reloaded RELOADS times at even intervals, a server weight
# alternated in the file each time; clients that keep their connections
# (keep-alive) and clients with a new connection per request (close: what
# -x is for, the connections queued on the old listeners). Ways of reloading:
#   sf      HAProxy: a new `haproxy -D -f CFG -p PIDFILE -sf OLDPID` (binds
#           its own listeners beside the old ones: SO_REUSEPORT)
#   xsf     a new process with `-x SOCK -sf OLDPID`: the listening sockets
#           come from the old process's runtime API socket (`stats socket
#           SOCK … expose-fd listeners`); HAProxy and llmgw, the same flags
#   sighup  llmgw: `kill -HUP`, the same process re-reads the file
# Failed = oha's errors + non-2xx answers, llmgw and HAProxy from one .cfg.
reload_cfg() { # KIND(plain|expose) -> the .cfg (port in PATH.port)
    local kind=$1 f=$work/reload-$1.cfg p sock="" reuse="" nl=$'\n'
    if [ ! -f "$f" ]; then
        p=$(port)
        [ "$kind" = expose ] && sock="$nl    stats socket $work/reload.sock mode 600 level admin expose-fd listeners"
        [ -n "$LLMGW_ACCEPTS_HTTP_REUSE" ] && reuse="$nl    http-reuse always"
        cat > "$f" <<CFG
# generated by tests/bench/compare.sh (reload row): served as is by HAProxy (haproxy -f) and llmgw (llmgw run -c)
global
    nbthread 1
    maxconn 5000$sock
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend bench
    bind 127.0.0.1:$p
    default_backend mock
backend mock$reuse
    server m1 127.0.0.1:$UP weight 100
CFG
        echo "$p" > "$f.port"
    fi
    echo "$f"
}
reload_toggle() { # FILE: weight 100 <-> 101, so that every reload swaps something
    if grep -q ' weight 100$' "$1"; then sed -i 's/ weight 100$/ weight 101/' "$1"; else sed -i 's/ weight 101$/ weight 100/' "$1"; fi
}
# reload_step NAME HOW CFG STEP: start the first process (STEP 0) or reload;
# sets R_PID (the process serving now), appends replaced ones to R_OLD
reload_step() {
    local name=$1 how=$2 f=$3 i=$4 sock=$work/reload.sock new k
    if [ "$how" = sighup ] && [ "$i" -gt 0 ]; then kill -HUP "$R_PID"; return; fi
    local old=$R_PID args=()
    if [ -n "$old" ]; then
        [ "$how" = xsf ] && args+=(-x "$sock")
        args+=(-sf "$old")
    fi
    case $name in
    haproxy)
        # -D: returns once the new process listens (and has sent -sf's SIGUSR1)
        taskset -c "$CORE_PROXY" haproxy -D -f "$f" -p "$work/reload.pid" "${args[@]}" >>"$work/reload-haproxy.out" 2>&1 ||
            { log "haproxy did not start:"; tail -5 "$work/reload-haproxy.out" >&2; return 1; }
        new=$(cat "$work/reload.pid"); pids+=("$new") ;;
    llmgw)
        # emptied here, not by the background job's redirection: a previous
        # run's lines must not pass for this process's
        : > "$work/reload-llmgw.$i.out"
        taskset -c "$CORE_PROXY" "$BIN" run -c "$f" "${args[@]}" >>"$work/reload-llmgw.$i.out" 2>&1 &
        new=$!; pids+=("$new")
        # ready once it says where it listens (the port itself is open all along)
        for ((k = 0; k < 200; k++)); do
            grep -q "listening on" "$work/reload-llmgw.$i.out" && break
            kill -0 "$new" 2>/dev/null || break
            sleep 0.05
        done
        grep -q "listening on" "$work/reload-llmgw.$i.out" ||
            { log "llmgw step $i did not start:"; tail -5 "$work/reload-llmgw.$i.out" >&2; return 1; } ;;
    esac
    [ -n "$old" ] && R_OLD+=("$old")
    R_PID=$new
}
row_reload() {
    if [ ! -x "$OHA" ]; then
        loud "reload row SKIPPED: oha is not installed (cargo install oha --locked; see /tmp/llmgw-oha-install.log)"
        return
    fi
    local n=$((RELOAD_RATE * RELOAD_S))
    local gap; gap=$(awk -v s="$RELOAD_S" -v k="$RELOADS" 'BEGIN {print s / (k + 1)}')
    log "== reload: oha -q $RELOAD_RATE -n $n -c 64 ($RELOAD_CLIENTS), $RELOADS reloads ${gap}s apart"
    start_mock
    local name how f r i line metric clients ka
    for name in haproxy llmgw; do
        has_proxy "$name" || continue
        local hows="sf xsf"; [ "$name" = llmgw ] && hows="sighup xsf"
        for how in $hows; do
            case $how in
            sf) f=$(reload_cfg plain); metric="new process with -sf OLDPID, no -x" ;;
            xsf) f=$(reload_cfg expose); metric="new process with -x SOCK -sf OLDPID" ;;
            sighup) f=$(reload_cfg plain); metric="SIGHUP, the same process re-reads the file" ;;
            esac
            local port; port=$(cat "$f.port")
            log "config $name ($how): $(basename "$f") sha256 $(sha256sum "$f" | cut -c1-12)"
            for clients in ${RELOAD_CLIENTS//,/ }; do
                ka=(); [ "$clients" = close ] && ka=(--disable-keepalive)
                for ((r = 0; r < RUNS; r++)); do
                    R_PID=""; R_OLD=()
                    fresh_data_dir # one per sequence: each successor takes its predecessor's
                    rm -f "$work/reload.sock" "$work/reload.pid"
                    reload_step "$name" "$how" "$f" 0 && wait_port "$port" || { killwait $R_PID; continue; }
                    sleep 0.5
                    taskset -c "$CORE_PROXY" "$OHA" --no-tui --output-format json -q "$RELOAD_RATE" -n "$n" -c 64 "${ka[@]}" -m POST \
                        -H 'content-type: application/json' -d "$BODY" "http://127.0.0.1:$port/v1/chat/completions" \
                        >"$work/reload.json" 2>"$work/reload.err" &
                    local oha=$! t0=$EPOCHREALTIME ok_steps=0
                    for ((i = 1; i <= RELOADS; i++)); do
                        sleep "$(awk -v t0="$t0" -v now="$EPOCHREALTIME" -v g="$gap" -v i="$i" 'BEGIN {d = t0 + g * i - now; print (d > 0 ? d : 0)}')"
                        reload_toggle "$f"
                        reload_step "$name" "$how" "$f" "$i" && ok_steps=$((ok_steps + 1))
                    done
                    wait "$oha"
                    # old processes still running when the load ends (soft stop not finished)
                    local o lingering=0
                    for o in "${R_OLD[@]}"; do kill -0 "$o" 2>/dev/null && lingering=$((lingering + 1)); done
                    # SIGHUP: the reloads llmgw logged as done
                    [ "$how" = sighup ] && ok_steps=$(grep -c 'configuration reloaded' "$work/reload-llmgw.0.out")
                    killwait $R_PID "${R_OLD[@]}"
                    line=$(python3 - "$work/reload.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d.get("statusCodeDistribution", {})
errs = d.get("errorDistribution", {})
non2xx = {k: v for k, v in codes.items() if not k.startswith("2")}
ok = sum(v for k, v in codes.items() if k.startswith("2"))
# -n, not -z: no request is cut off by a deadline, every error counts
kinds = dict(errs, **{"HTTP " + k: v for k, v in non2xx.items()})
print(sum(errs.values()) + sum(non2xx.values()), ok, json.dumps(kinds).replace(" ", "_"))
PY
                    ) || { log "oha output unreadable: $(tail -3 "$work/reload.err")"; continue; }
                    if [ "$ok_steps" != "$RELOADS" ]; then
                        loud "reload $name $how $clients run $((r + 1)): only $ok_steps of $RELOADS reloads took effect; no figures recorded"
                        continue
                    fi
                    local errs ok kinds
                    read -r errs ok kinds <<<"$line"
                    local cl="keep-alive clients"; [ "$clients" = close ] && cl="a new connection per request"
                    sample reload "failed requests (of $n), $RELOADS reloads, $cl: $metric" count lo "$name" "$errs"
                    sample reload "requests answered 2xx (of $n), $RELOADS reloads, $cl: $metric" count hi "$name" "$ok"
                    [ "$errs" != 0 ] && note "reload $name $how $clients run $((r + 1)): $errs failed $kinds"
                    [ "$lingering" != 0 ] && note "reload $name $how $clients run $((r + 1)): $lingering replaced process(es) still running when the load ended"
                done
            done
        done
    done
    note "reload: one mock upstream on core $CORE_UP; oha -q $RELOAD_RATE -n $n -c 64 (POST chat completion; keep-alive clients, and --disable-keepalive for a new connection per request) and the proxy (nbthread 1) on core $CORE_PROXY; $RELOADS reloads ${gap}s apart, each with the server weight alternated 100/101 in the file; failed = oha errors + non-2xx. HAProxy: 'haproxy -D -f CFG -p PIDFILE -sf OLDPID' per reload, with '-x SOCK' in the second case (the .cfg then has 'stats socket SOCK mode 600 level admin expose-fd listeners'); llmgw: 'kill -HUP' (the same process re-reads the file), and 'llmgw run -c CFG -x SOCK -sf OLDPID' from the same .cfg as HAProxy's -x case, the new process counted ready when it prints 'listening on'."
}

# ------------------------------------------------------------------ main ----
started=$(date -u +%FT%TZ)
if [ -n "${KEEP_OTHER_ROWS:-}" ] && [ -f "$OUT/latest.samples.tsv" ]; then
    # rerun some rows, keep the previous run's figures for the others
    awk -F'\t' -v rows=",$ROWS," 'index(rows, "," $1 ",") == 0' "$OUT/latest.samples.tsv" >> "$samples"
    # (not the notes every run writes again: 'rows', 'configs')
    [ -f "$OUT/latest.notes.txt" ] && awk -v rows=",$ROWS," '{r = $1; sub(/:$/, "", r)} r != "rows" && r != "configs" && index(rows, "," r ",") == 0' "$OUT/latest.notes.txt" >> "$notes"
    note "rows not in '$ROWS' are from the previous run in $OUT"
fi
for row in ${ROWS//,/ }; do
    if declare -F "row_$row" >/dev/null; then "row_$row"; else log "unknown row '$row'"; fi
done
if has_proxy llmgw && has_proxy haproxy && [ -n "$LLMGW_ACCEPTS_HTTP_REUSE" ]; then
    note "configs: llmgw (run -c FILE.cfg, strict) and HAProxy are started from the very same generated HAProxy .cfg, with http-reuse always, in every row but the throughput headline (llmgw: native TOML routing on the body model) (tls with resumption off: the same file with no-tls-tickets and tune.ssl.cachesize 0). nginx: its own nginx.conf."
elif has_proxy llmgw && has_proxy haproxy; then
    note "configs: llmgw (run -c FILE.cfg, strict) and HAProxy are started from the very same generated HAProxy .cfg in the latency, cpu, streams and idle rows (routing on the path) and in 'both route on the body model'; that file has no http-reuse line (llmgw rejects 'http-reuse'), so HAProxy runs its default 'safe', which measured the same as 'always' with keep-alive clients; they differ in the throughput headline (llmgw: native TOML routing on the body model; HAProxy: the shared path .cfg) and in the tls rows (HAProxy: the shared TLS .cfg + 'http-reuse always', which matters with a connection per request; + no-tls-tickets / tune.ssl.cachesize 0 for resumption off). nginx: its own nginx.conf."
fi
mkdir -p "$OUT"
python3 "$here/report.py" "$samples" "$notes" "$OUT/latest.md" "$OUT/latest.json" \
    "date=$started" "llmgw=$("$BIN" --version 2>/dev/null | awk '{print $2}') ($BIN$(git -C "$(dirname "$BIN")" rev-parse --short HEAD 2>/dev/null | sed 's/^/ @ /'))" \
    "haproxy=$(haproxy -v 2>/dev/null | awk 'NR==1 {print $3}')" "nginx=$(nginx -v 2>&1 | sed 's|.*/||')" \
    "cpus=$ncpu" "runs=$RUNS" "duration=$DURATION"
cp "$samples" "$OUT/latest.samples.tsv"; cp "$notes" "$OUT/latest.notes.txt"
[ -f "$work/streams.raw" ] && cp "$work/streams.raw" "$OUT/latest.streams.jsonl"
log "written: $OUT/latest.md $OUT/latest.json"
