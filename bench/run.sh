#!/usr/bin/env bash
# bench/run.sh — lite-apiserver side by side with direct access and an nginx mTLS proxy,
# every figure against a baseline measured in the same run (see docs/BENCHMARKS.md).
#
# Starts on 127.0.0.1 only:
#   fake    examples/fake_apiserver (watches, configmaps, writes)
#   up      nginx over HTTPS: static Pod/PodList fixtures, everything else proxied to fake
#   lite    lite-apiserver  -> up
#   peer    nginx, 1 worker, mTLS reverse proxy (proxy_ssl_certificate) -> up
# and measures with examples/bench_client (rustls, presents client certs), and in the
# concurrency sweep (bench/sweep.sh, section 0) with wrk too.
#
# Knobs (environment): BENCH_DURATION (s per load run, 3), BENCH_REPEAT (3: runs per
# figure in (1) and (2), interleaved, median taken), BENCH_CONNECTIONS (8),
# BENCH_WATCHERS (500), BENCH_CONFIGMAPS (5000), BENCH_EVENTS (5000 per churn round),
# BENCH_EVENT_RATE (1000 paced events/s),
# BENCH_UPSTREAM_VERIFY (optional|on|off), BENCH_WORK (scratch dir), BENCH_DOC (output
# markdown, docs/BENCHMARKS.md), BENCH_REPORT_ONLY=1 (with BENCH_WORK of a finished run:
# only re-render its tables), BENCH_PROFILE=1 (also perf-record lite-apiserver, built
# with line tables, during the GET and LIST runs), BENCH_ONLY=sweep (only the concurrency
# sweep; its table goes to the scratch dir and stdout, not BENCH_DOC), BENCH_ONLY=memory
# (only memory and watch fan-out, sections 3 and 4, the same way), BENCH_LITE_BINARY (measure
# this lite-apiserver binary, e.g. an older build, with the current tools), BENCH_LITE_ARGS
# (extra lite-apiserver flags), BENCH_SKIP_BUILD=1
# (use the binaries already built in CARGO_TARGET_DIR), the BENCH_SWEEP_*
# knobs of bench/sweep.sh, CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# shellcheck source=bench/sweep.sh
source "$ROOT/bench/sweep.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

DURATION=${BENCH_DURATION:-3}
REPEAT=${BENCH_REPEAT:-3}
CONNS=${BENCH_CONNECTIONS:-8}
WATCHERS=${BENCH_WATCHERS:-500}
CONFIGMAPS=${BENCH_CONFIGMAPS:-5000}
EVENTS=${BENCH_EVENTS:-5000}
EVENT_RATE=${BENCH_EVENT_RATE:-1000}
VERIFY=${BENCH_UPSTREAM_VERIFY:-optional}
DOC=${BENCH_DOC:-$ROOT/docs/BENCHMARKS.md}
PROFILE=${BENCH_PROFILE:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${BENCH_WORK:-$(mktemp -d /tmp/lite-bench.XXXXXX)}
RES=$WORK/results
mkdir -p "$RES" "$WORK/nginx-tmp"
# nginx workers run as nobody: they must reach the fixtures.
chmod 755 "$WORK"

GET_PATH=/api/v1/namespaces/fixtures/pods/web-7d4b9c8f6d-00000
LIST100K_PATH=/api/v1/namespaces/fixtures/pods
LIST1M_PATH=/api/v1/namespaces/fixtures-big/pods
FANOUT_PATH=/api/v1/namespaces/fanout/pods
CM_PATH=/api/v1/namespaces/bench-cm/configmaps
RUN_STARTED=$SECONDS

# ---------------------------------------------------------------------------------------
# Tools, build, certificates, fixtures

ensure_tools() {
    local missing=() tool package sudo=""
    for tool in nginx:nginx wrk:wrk jq:jq curl:curl pgrep:procps; do
        command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get"
    ((EUID == 0)) || sudo=sudo
    log "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
    # BENCH_SKIP_BUILD=1: the binaries already in CARGO_TARGET_DIR (a shared tree moves on).
    [[ ${BENCH_SKIP_BUILD:-0} == 1 ]] || log "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    [[ ${BENCH_SKIP_BUILD:-0} == 1 ]] || (cd "$ROOT" && cargo build --release --quiet --bin lite-apiserver \
        --example fake_apiserver --example gen_certs --example bench_client)
    BIN=$CARGO_TARGET_DIR/release
    LITE=$BIN/lite-apiserver
    # Measure what edgeadm ships: the static binary (test.sh builds the same one).
    if [[ $(uname -m) == x86_64 ]]; then
        [[ ${BENCH_SKIP_BUILD:-0} == 1 ]] || (cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' \
            cargo build --release --quiet --target x86_64-unknown-linux-gnu --bin lite-apiserver)
        LITE=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/lite-apiserver
    fi
    LITE=${BENCH_LITE_BINARY:-$LITE}
    FAKE=$BIN/examples/fake_apiserver
    BENCH=$BIN/examples/bench_client
    strip -o "$WORK/lite-apiserver.stripped" "$LITE"
    if [[ $PROFILE == 1 ]]; then
        log "building a copy with line tables for perf (CARGO_TARGET_DIR=$CARGO_TARGET_DIR-profile)"
        [[ ${BENCH_SKIP_BUILD:-0} == 1 ]] || (cd "$ROOT" && CARGO_TARGET_DIR=$CARGO_TARGET_DIR-profile CARGO_PROFILE_RELEASE_STRIP=false \
            CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --quiet --bin lite-apiserver)
        LITE=$CARGO_TARGET_DIR-profile/release/lite-apiserver
    fi
}

make_pki() {
    PKI=$WORK/pki
    "$BIN/examples/gen_certs" "$PKI" >/dev/null
    "$BENCH" identities --pki "$PKI" --count 10 --out "$PKI/tls-bench.json" >"$RES/identities.json"
    KUBELET="$PKI/kubelet.crt,$PKI/kubelet.key"
    ADMIN="$PKI/admin.crt,$PKI/admin.key"
    TEN_IDS=()
    local i
    for i in $(seq 0 9); do TEN_IDS+=(--identity "$PKI/bench-$i.crt,$PKI/bench-$i.key"); done
}

# ---------------------------------------------------------------------------------------
# Processes

start_fake() {
    "$FAKE" --cert "$PKI/server.crt" --key "$PKI/server.key" --client-ca "$PKI/ca.crt" \
        --port 0 --history 50000 >"$WORK/fake.out" 2>"$WORK/fake.log" &
    FAKE_PID=$!
    track "$FAKE_PID"
    local i
    for ((i = 0; i < 400; i++)); do
        FAKE_PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$WORK/fake.out")
        [[ -n $FAKE_PORT ]] && break
        sleep 0.05
    done
    [[ -n $FAKE_PORT ]] || die "fake_apiserver did not start (see $WORK/fake.log)"
    local ns
    for ns in fanout bench-cm; do
        fake_curl -X POST -H 'Content-Type: application/json' \
            -d "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$ns\"}}" \
            "https://127.0.0.1:$FAKE_PORT/api/v1/namespaces" >/dev/null
    done
}

fake_curl() { curl -sS --fail --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"; }
lite_curl() { curl -sS --fail --cacert "$PKI/ca.crt" --cert "$PKI/kubelet.crt" --key "$PKI/kubelet.key" "$@"; }

# render TEMPLATE OUTPUT PORT
render_nginx() {
    sed -e "s|@WORK@|$WORK|g" -e "s|@PKI@|$PKI|g" -e "s|@FIXTURES@|$WORK/fixtures|g" \
        -e "s|@PORT@|$3|g" -e "s|@FAKE_PORT@|$FAKE_PORT|g" -e "s|@UPSTREAM_PORT@|${UP_PORT:-0}|g" \
        -e "s|@VERIFY@|$VERIFY|g" -e "s|@WORKERS@|auto|g" "$1" >"$2"
}

# start_nginx NAME TEMPLATE PORT -> sets <NAME>_PID
start_nginx() {
    local name=$1 conf=$WORK/nginx-$1.conf
    render_nginx "$2" "$conf" "$3"
    nginx -e "$WORK/nginx-$name.error.log" -p "$WORK" -c "$conf" -t -q || die "nginx config $conf"
    nginx -e "$WORK/nginx-$name.error.log" -p "$WORK" -c "$conf" &
    local pid=$!
    track "$pid"
    wait_port "$3"
    printf -v "${name^^}_PID" '%s' "$pid"
}

start_lite() {
    LITE_PORT=$(free_port)
    DIAG_PORT=$(free_port)
    LITE_ARGS=(--ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/server.crt" --tls-private-key-file "$PKI/server.key"
        --kube-apiserver-url "https://127.0.0.1:$UP_PORT" --tls-config-file "$PKI/tls-bench.json"
        --port "$LITE_PORT" --file-cache-path "$WORK/cache" --diagnostics-port "$DIAG_PORT")
    # BENCH_LITE_ARGS: extra flags, e.g. "--max-idle-upstream 256".
    # shellcheck disable=SC2206
    LITE_ARGS+=(${BENCH_LITE_ARGS:-})
    "$BENCH" cold-start --addr "127.0.0.1:$LITE_PORT" --path "$GET_PATH" --ca "$PKI/ca.crt" \
        --identity "$KUBELET" --log "$WORK/lite.log" -- "$LITE" "${LITE_ARGS[@]}" >"$RES/cold-start.json"
    LITE_PID=$(field "$RES/cold-start.json" .pid)
    track "$LITE_PID"
    log "lite-apiserver pid $LITE_PID: first 200 after $(field "$RES/cold-start.json" .first_ok_ms) ms"
}

# ---------------------------------------------------------------------------------------
# Measurements

# load NAME ADDR PATH CONNECTIONS [bench_client flags...]: one timed run, CPU of every
# server process recorded alongside.
load() {
    local name=$1 addr=$2 path=$3 conns=$4
    shift 4
    local lite0 cache0 peer0 up0
    lite0=$(cpu_ticks "$LITE_PID")
    cache0=$(thread_ticks "$LITE_PID" cache)
    peer0=$(cpu_ticks $(nginx_pids "$PEER_PID"))
    up0=$(cpu_ticks $(nginx_pids "$UP_PID"))
    "$BENCH" load --addr "$addr" --path "$path" --ca "$PKI/ca.crt" --connections "$conns" \
        --duration "${LOAD_SECS:-$DURATION}" "$@" >"$RES/$name.raw"
    jq --argjson lite $(($(cpu_ticks "$LITE_PID") - lite0)) \
        --argjson cache $(($(thread_ticks "$LITE_PID" cache) - cache0)) \
        --argjson peer $(($(cpu_ticks $(nginx_pids "$PEER_PID")) - peer0)) \
        --argjson up $(($(cpu_ticks $(nginx_pids "$UP_PID")) - up0)) \
        '. + {cpu_ticks: {lite: $lite, lite_cache_thread: $cache, peer: $peer, upstream: $up}}' \
        "$RES/$name.raw" >"$RES/$name.json"
    log "$(printf '%-24s %9s req/s  p50 %7s ms  p99 %7s ms  errors %s  non-200 %s' "$name" \
        "$(field "$RES/$name.json" .rps)" "$(field "$RES/$name.json" .p50_ms)" "$(field "$RES/$name.json" .p99_ms)" \
        "$(field "$RES/$name.json" .errors)" "$(field "$RES/$name.json" '.requests - .ok')")"
}

addr_of() {
    case $1 in
        direct) echo "127.0.0.1:$UP_PORT" ;;
        lite) echo "127.0.0.1:$LITE_PORT" ;;
        nginx) echo "127.0.0.1:$PEER_PORT" ;;
        fake) echo "127.0.0.1:$FAKE_PORT" ;;
    esac
}

path_of() {
    case $1 in
        get) echo "$GET_PATH" ;;
        list100k) echo "$LIST100K_PATH" ;;
        list1m) echo "$LIST1M_PATH" ;;
    esac
}

# repeated LABEL TARGETS REQUEST CONNS: $REPEAT rounds over the targets (interleaved, so
# a noisy moment hits all of them), then the median of each figure per target.
repeated() {
    local label=$1 targets=$2 request=$3 conns=$4 rep target
    for ((rep = 1; rep <= REPEAT; rep++)); do
        for target in $targets; do
            load "$request-c$conns-$label$target-r$rep" "$(addr_of "$target")" "$(path_of "$request")" "$conns" --identity "$KUBELET"
        done
    done
    for target in $targets; do
        aggregate "$request-c$conns-$label$target"
    done
}

# aggregate NAME: NAME-r*.json -> NAME.json with medians; totals and CPU ticks summed.
aggregate() {
    jq -s 'def median: sort | .[length / 2 | floor];
        . as $runs
        | reduce ($runs[0] | with_entries(select(.value | type == "number")) | keys[]) as $k
            ({}; .[$k] = ([$runs[][$k]] | median))
        | .reps = ($runs | length)
        | .totals = {requests: ([$runs[].requests] | add), ok: ([$runs[].ok] | add), errors: ([$runs[].errors] | add)}
        | .cpu_ticks = (reduce ($runs[0].cpu_ticks | keys[]) as $c ({}; .[$c] = ([$runs[].cpu_ticks[$c]] | add)))' \
        "$RES/$1"-r*.json >"$RES/$1.json"
}

# (1) and (5): the same requests direct, through lite-apiserver and through nginx.
measure_proxying() {
    local request conns
    for request in get list100k list1m; do
        for conns in "$CONNS" 1; do
            [[ $request == list1m && $conns == 1 ]] && continue
            repeated "" "direct lite nginx" "$request" "$conns"
        done
    done
    # The load generator itself, against wrk on the same direct requests (no client cert).
    wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "https://127.0.0.1:$UP_PORT$GET_PATH" >"$RES/wrk-get-direct.txt" 2>&1 || true
}

# profile_lite LABEL REQUEST...: with BENCH_PROFILE=1, extra runs through lite under
# `perf record` (not used in the tables: perf slows what it watches). Writes
# $WORK/perf-LABEL-REQUEST.{data,threads.txt,lines.txt,callers.txt}.
profile_lite() {
    [[ $PROFILE == 1 ]] || return 0
    command -v perf >/dev/null || { log "perf not installed: no profile"; return 0; }
    local label=$1 request out
    shift
    for request in "$@"; do
        out=$WORK/perf-$label-$request
        perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -o "$out.data" -p "$LITE_PID" \
            -- sleep "$DURATION" >/dev/null 2>&1 &
        local perf_pid=$!
        sleep 0.2
        load "profile-$label-$request" "$(addr_of lite)" "$(path_of "$request")" "$CONNS" --identity "$KUBELET"
        wait "$perf_pid" || true
        perf report -i "$out.data" --stdio --no-children -g none --sort comm,dso,symbol --percent-limit 0.7 \
            >"$out.threads.txt" 2>/dev/null || true
        timeout 300 perf report -i "$out.data" --stdio --no-children -g none --sort srcline --percent-limit 0.7 \
            >"$out.lines.txt" 2>/dev/null || true
        perf report -i "$out.data" --stdio --no-children -g caller,2,callee,function,percent --sort symbol \
            --percent-limit 2 >"$out.callers.txt" 2>/dev/null || true
        log "profile: $out.{threads,lines,callers}.txt"
    done
}

# (3): memory with 10 identities, $WATCHERS open watches and the GET/LIST load. $1 = lite|nginx.
measure_memory() {
    local target=$1 pids release=$WORK/release-$1 out=$RES/mem-$1-watchers.out
    if [[ $target == lite ]]; then pids=$LITE_PID; else pids=$(nginx_pids "$PEER_PID"); fi
    # shellcheck disable=SC2086
    status_kb VmRSS $pids >"$RES/mem-$target-before.kb"
    rm -f "$release"
    "$BENCH" watchers --addr "$(addr_of "$target")" --path "$FANOUT_PATH" --ca "$PKI/ca.crt" "${TEN_IDS[@]}" \
        --count "$WATCHERS" --hold-secs 120 --release-file "$release" >"$out" &
    local holder=$!
    local i
    for ((i = 0; i < 1200; i++)); do
        grep -q '"ready"' "$out" 2>/dev/null && break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    status_kb VmRSS $pids >"$RES/mem-$target-watches.kb"
    local request
    for request in get list100k list1m; do
        load "mem-$target-$request" "$(addr_of "$target")" "$(path_of $request)" 10 "${TEN_IDS[@]}"
    done
    # shellcheck disable=SC2086
    status_kb VmRSS $pids >"$RES/mem-$target-loaded.kb"
    touch "$release"
    wait "$holder" || true
    sleep 2
    # shellcheck disable=SC2086
    {
        status_kb VmRSS $pids >"$RES/mem-$target-after.kb"
        status_kb VmHWM $pids >"$RES/mem-$target-peak.kb"
    }
}

# (4): one change, $WATCHERS watchers, 3 rounds; through every path to the fake apiserver.
measure_fanout() {
    local target
    for target in fake direct lite nginx; do
        "$BENCH" watchers --addr "$(addr_of $target)" --path "$FANOUT_PATH" --ca "$PKI/ca.crt" --identity "$KUBELET" \
            --count "$WATCHERS" --rounds 5 --trigger-addr "127.0.0.1:$FAKE_PORT" --trigger-identity "$ADMIN" \
            >"$RES/fanout-$target.json"
        log "fan-out via $target: $(jq -c '{ready, open_secs, p50_ms, p99_ms, max_ms, missed}' "$RES/fanout-$target.json")"
    done
}

# (7): a cached LIST of $CONFIGMAPS objects, a watch through lite, PUTs at the fake apiserver.
#   A: $EVENTS events paced at $EVENT_RATE/s: cache-thread CPU per event (-> events/s capacity);
#   B: the same again while GETs run through lite: their p99 against a quiet run (reactor stall);
#   C: a fresh LIST and watch, then $EVENTS events as fast as the fake takes them: does the
#      cache keep up or drop the stream?
measure_cache_writes() {
    "$BENCH" write --addr "127.0.0.1:$FAKE_PORT" --path "$CM_PATH" --ca "$PKI/ca.crt" --identity "$ADMIN" \
        --method POST --count "$CONFIGMAPS" --connections 4 --tag created >"$RES/cm-create.json"
    local t0=$EPOCHREALTIME
    lite_curl -o "$WORK/cm-list.json" "https://127.0.0.1:$LITE_PORT$CM_PATH"
    calc "($EPOCHREALTIME - $t0) * 1000" 1 >"$RES/cm-list.ms"
    wait_thread_idle "$LITE_PID" cache 60 >/dev/null

    watch_configmaps ab $((2 * EVENTS))
    churn_round a --rate "$EVENT_RATE"
    local churn_secs
    churn_secs=$(calc "$EVENTS / $EVENT_RATE" 1)
    LOAD_SECS=$churn_secs load cm-get-quiet "$(addr_of lite)" "$GET_PATH" 2 --identity "$KUBELET"
    churn_round b --rate "$EVENT_RATE" &
    local churn=$!
    LOAD_SECS=$churn_secs load cm-get-events "$(addr_of lite)" "$GET_PATH" 2 --identity "$KUBELET"
    wait "$churn"
    end_watch
    grep -c 'no longer updating' "$WORK/lite.log" >"$RES/cm-streams-stopped-ab.count" || true

    lite_curl -o /dev/null "https://127.0.0.1:$LITE_PORT$CM_PATH"
    wait_thread_idle "$LITE_PID" cache 60 >/dev/null
    watch_configmaps c "$EVENTS"
    churn_round c
    end_watch
    grep -c 'no longer updating' "$WORK/lite.log" >"$RES/cm-streams-stopped.count" || true
}

# watch_configmaps NAME EVENTS: a watch through lite that counts EVENTS events (background).
watch_configmaps() {
    WATCH_OUT=$RES/cm-watch-$1.out
    "$BENCH" watch-count --addr "$(addr_of lite)" --path "$CM_PATH" --ca "$PKI/ca.crt" --identity "$KUBELET" \
        --events "$2" --timeout 120 >"$WATCH_OUT" &
    WATCHER=$!
    local i
    for ((i = 0; i < 200; i++)); do
        grep -q '"ready"' "$WATCH_OUT" 2>/dev/null && break
        sleep 0.05
    done
}

# Lets the watch see its last events (10 s at most), then ends it.
end_watch() {
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$WATCHER" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$WATCHER"
    wait "$WATCHER" 2>/dev/null || true
}

# churn_round NAME [write flags]: PUTs every ConfigMap once (tag churn-NAME) and records the
# cache thread's CPU and dropped writes until the cache thread is idle again.
churn_round() {
    local name=$1 cache0 lite0 dropped0 started
    shift
    dropped0=$(metric cache_dropped_writes_total)
    cache0=$(thread_ticks "$LITE_PID" cache)
    lite0=$(cpu_ticks "$LITE_PID")
    started=$EPOCHREALTIME
    "$BENCH" write --addr "127.0.0.1:$FAKE_PORT" --path "$CM_PATH" --ca "$PKI/ca.crt" --identity "$ADMIN" \
        --method PUT --count "$EVENTS" --connections 4 --tag "churn-$name" "$@" >"$RES/cm-churn-$name.json"
    local cache1 lite1
    cache1=$(wait_thread_idle "$LITE_PID" cache 60)
    lite1=$(cpu_ticks "$LITE_PID")
    # The idle check ends 3 quiet samples (0.6 s) after the last work.
    jq --argjson cache $((cache1 - cache0)) --argjson lite $((lite1 - lite0)) \
        --argjson dropped $(($(metric cache_dropped_writes_total) - dropped0)) \
        --argjson wall "$(calc "$EPOCHREALTIME - $started - 0.6" 3)" \
        '. + {cache_ticks: $cache, lite_ticks: $lite, dropped_writes: $dropped, applied_within_secs: $wall}' \
        "$RES/cm-churn-$name.json" >"$RES/cm-churn-$name.tmp" && mv "$RES/cm-churn-$name.tmp" "$RES/cm-churn-$name.json"
    log "churn $name: $(jq -c . "$RES/cm-churn-$name.json")"
}

# Waits (at most 100 s) until lite holds at most one cloud connection.
wait_idle_upstreams_closed() {
    local i
    for ((i = 0; i < 200; i++)); do
        (($(metric open_upstream_connections) <= 1)) && return
        sleep 0.5
    done
    log "idle upstream connections still open: $(metric open_upstream_connections)"
}

# A counter from lite-apiserver's /metrics (0 when absent).
metric() {
    curl -sS "http://127.0.0.1:$DIAG_PORT/metrics" 2>/dev/null | awk -v m="lite_apiserver_$1" '$1 == m { v = $2 } END { print v + 0 }'
}

# (2): the upstream stopped; lite-apiserver answers from its cache.
measure_offline() {
    stop_pid "$UP_PID"
    local request conns
    for request in get list100k list1m; do
        for conns in "$CONNS" 1; do
            [[ $request == list1m && $conns == 1 ]] && continue
            repeated offline- lite "$request" "$conns"
        done
    done
    # Which of the (7) updates reached the cached list: items per tag (each round PUTs every item).
    lite_curl -D "$WORK/cm-offline.headers" -o "$WORK/cm-offline.json" "https://127.0.0.1:$LITE_PORT$CM_PATH" || true
    jq '{items: (.items | length), tags: ([.items[].data.tag] | group_by(.) | map({(.[0]): length}) | add)}' \
        "$WORK/cm-offline.json" >"$RES/cm-offline.json" 2>/dev/null || echo '{"items":0,"tags":{}}' >"$RES/cm-offline.json"
    curl -sS "http://127.0.0.1:$DIAG_PORT/metrics" >"$RES/metrics-end.txt" || true
}

# ---------------------------------------------------------------------------------------
# Report

r() { field "$RES/$1.json" "$2"; }
per10k() { calc "$1 / $CLK_TCK / $2 * 10000" 2; }
yes_no() { if awk "BEGIN { exit !($1) }"; then echo yes; else echo no; fi; }

# Section (3) of the report.
memory_report() {
    echo "### 3. Memory (RSS; nginx = master + worker)"
    echo
    echo "| moment | lite-apiserver | nginx peer |"
    echo "|---|---|---|"
    echo "| idle after start (1 request served) | $(mib "$(cat "$RES/idle-lite.kb")") MiB | $(mib "$(cat "$RES/idle-nginx.kb")") MiB |"
    echo "| of which anonymous (heap, stacks) / file-backed (binary, libraries) | $(mib "$(cat "$RES/idle-lite-anon.kb")") / $(mib "$(cat "$RES/idle-lite-file.kb")") MiB | |"
    echo "| $WATCHERS watches open (10 identities) | $(mib "$(cat "$RES/mem-lite-watches.kb")") MiB | $(mib "$(cat "$RES/mem-nginx-watches.kb")") MiB |"
    echo "| same + GET/LIST load, 10 identities | $(mib "$(cat "$RES/mem-lite-loaded.kb")") MiB | $(mib "$(cat "$RES/mem-nginx-loaded.kb")") MiB |"
    echo "| **peak since start (VmHWM)** | **$(mib "$(cat "$RES/mem-lite-peak.kb")") MiB** | $(mib "$(cat "$RES/mem-nginx-peak.kb")") MiB |"
    echo "| after the load and watches end | $(mib "$(cat "$RES/mem-lite-after.kb")") MiB | $(mib "$(cat "$RES/mem-nginx-after.kb")") MiB |"
    echo
    echo "Cache writes over the whole run (lite /metrics): $(grep -E '^lite_apiserver_cache_(stored_total|dropped_writes_total|entries|bytes) ' "$RES/metrics-end.txt" 2>/dev/null | sed 's/^lite_apiserver_//' | tr '\n' ' ')— a write is dropped when the cache queue is full."
    echo
    echo "Watches opened: lite $(head -1 "$RES/mem-lite-watchers.out" | jq -r .ready)/$WATCHERS in $(head -1 "$RES/mem-lite-watchers.out" | jq -r .open_secs) s, nginx $(head -1 "$RES/mem-nginx-watchers.out" | jq -r .ready)/$WATCHERS in $(head -1 "$RES/mem-nginx-watchers.out" | jq -r .open_secs) s. Load under watches, req/s lite / nginx: GET $(r mem-lite-get .rps) / $(r mem-nginx-get .rps), LIST 100 KB $(r mem-lite-list100k .rps) / $(r mem-nginx-list100k .rps), LIST 1 MB $(r mem-lite-list1m .rps) / $(r mem-nginx-list1m .rps)."
    echo
}

# Section (4) of the report.
fanout_report() {
    local target
    echo "### 4. Watch fan-out: $WATCHERS watchers, one pod created at the fake apiserver, time until each watcher saw it (5 rounds pooled)"
    echo
    echo "| watchers connect to | open | p50 ms | p99 ms | max ms | missed | p99 vs direct |"
    echo "|---|---|---|---|---|---|---|"
    for target in fake direct lite nginx; do
        echo "| $(target_label $target) | $(r fanout-$target .ready)/$WATCHERS in $(r fanout-$target .open_secs) s | $(r fanout-$target .p50_ms) | $(r fanout-$target .p99_ms) | $(r fanout-$target .max_ms) | $(r fanout-$target .missed) of $(r fanout-$target '.watchers * .rounds') | $(ratio "$(r fanout-$target .p99_ms)" "$(r fanout-direct .p99_ms)") |"
    done
    echo
    echo "Percentiles are over the watchers that saw the change within 10 s; \"missed\" counts the others. lite-apiserver declared the cloud down on its own $(unplanned_outages) time(s) during the run (not counting the offline phase): $(grep 'cloud apiserver unreachable' "$WORK/lite.log" | grep -v 'Connection refused' | sed 's/^.*serving from cache: //' | sort | uniq -c | sed 's/^ *//' | tr '\n' ';')"
    echo
}

report() {
    local request conns label size
    sweep_report
    echo "### 1. Throughput and latency (same requests: direct, through lite-apiserver, through nginx)"
    echo
    echo "| request | conns | direct req/s | lite req/s | nginx req/s | lite/direct | **lite/nginx** | p50 ms direct / lite / nginx | p99 ms direct / lite / nginx | p99 lite/nginx |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for request in get list100k list1m; do
        label=$(request_label $request)
        for conns in "$CONNS" 1; do
            [[ $request == list1m && $conns == 1 ]] && continue
            local d=$request-c$conns-direct l=$request-c$conns-lite n=$request-c$conns-nginx
            echo "| $label | $conns | $(r $d .rps) | $(r $l .rps) | $(r $n .rps) | $(ratio "$(r $l .rps)" "$(r $d .rps)") | **$(ratio "$(r $l .rps)" "$(r $n .rps)")** | $(r $d .p50_ms) / $(r $l .p50_ms) / $(r $n .p50_ms) | $(r $d .p99_ms) / $(r $l .p99_ms) / $(r $n .p99_ms) | $(ratio "$(r $l .p99_ms)" "$(r $n .p99_ms)") |"
        done
    done
    echo
    local wrk_rps
    wrk_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$RES/wrk-get-direct.txt")
    echo "Load generator check: wrk (no client cert) ${wrk_rps:-n/a} req/s vs bench_client $(r get-c$CONNS-direct .rps) req/s on the direct GET, $CONNS connections."
    echo "Figures are medians of $REPEAT interleaved runs of $DURATION s. Errors or non-200 answers in these runs: $(jq -s 'map(.totals.errors + .totals.requests - .totals.ok) | add' "$RES"/{get,list100k,list1m}-c*-{direct,lite,nginx}.json)."
    echo

    echo "### 5. CPU cost (CPU-seconds per 10k requests, from /proc/<pid>/stat utime+stime, $CONNS connections)"
    echo
    echo "| request | lite total | of which cache thread | nginx peer | **lite/nginx** | upstream nginx (via lite / via nginx) |"
    echo "|---|---|---|---|---|---|"
    for request in get list100k list1m; do
        local l=$request-c$CONNS-lite n=$request-c$CONNS-nginx
        local lite_cpu peer_cpu
        lite_cpu=$(per10k "$(r $l .cpu_ticks.lite)" "$(r $l .totals.requests)")
        peer_cpu=$(per10k "$(r $n .cpu_ticks.peer)" "$(r $n .totals.requests)")
        echo "| $(request_label $request) | $lite_cpu | $(per10k "$(r $l .cpu_ticks.lite_cache_thread)" "$(r $l .totals.requests)") | $peer_cpu | **$(ratio "$lite_cpu" "$peer_cpu")** | $(per10k "$(r $l .cpu_ticks.upstream)" "$(r $l .totals.requests)") / $(per10k "$(r $n .cpu_ticks.upstream)" "$(r $n .totals.requests)") |"
    done
    echo

    echo "### 2. Offline: upstream stopped, answers from the cache"
    echo
    echo "| request | conns | online req/s | offline req/s | **offline/online** | p50 ms online / offline | p99 ms online / offline | non-200 offline |"
    echo "|---|---|---|---|---|---|---|---|"
    for request in get list100k list1m; do
        for conns in "$CONNS" 1; do
            [[ $request == list1m && $conns == 1 ]] && continue
            local on=$request-c$conns-lite off=$request-c$conns-offline-lite
            echo "| $(request_label $request) | $conns | $(r $on .rps) | $(r $off .rps) | **$(ratio "$(r $off .rps)" "$(r $on .rps)")** | $(r $on .p50_ms) / $(r $off .p50_ms) | $(r $on .p99_ms) / $(r $off .p99_ms) | $(r $off '.totals.requests - .totals.ok + .totals.errors') |"
        done
    done
    echo

    memory_report
    fanout_report
    echo "### 6. Binary and start"
    echo
    size=$(stat -c %s "$WORK/lite-apiserver.stripped")
    echo "| | value |"
    echo "|---|---|"
    echo "| lite-apiserver, stripped release | $(mib $((size / 1024))) MiB ($size bytes); $(file -b "$WORK/lite-apiserver.stripped" | grep -o 'dynamically linked\|statically linked\|static-pie linked'), needs $(ldd "$WORK/lite-apiserver.stripped" 2>/dev/null | awk '/=>/ { print $1 }' | tr '\n' ' ') |"
    echo "| nginx binary for reference (without its shared libraries) | $(mib $(($(stat -c %s "$(command -v nginx)") / 1024))) MiB |"
    echo "| cold start to first served request (GET through to the upstream, new cache) | $(r cold-start .first_ok_ms) ms (first TCP accept at $(r cold-start .first_connect_ms) ms) |"
    echo

    echo "### 7. Cache write cost: watch events applied to a cached LIST of $CONFIGMAPS ConfigMaps"
    echo
    echo "A watch through lite-apiserver on a cached LIST of $CONFIGMAPS ConfigMaps ($(calc "$(stat -c %s "$WORK/cm-list.json") / 1048576" 2) MiB, listed through lite in $(cat "$RES/cm-list.ms") ms); each round PUTs every ConfigMap once at the fake apiserver."
    echo
    echo "| round | events offered | cache-thread CPU | **events per cache-thread CPU-second** | other lite CPU | all applied within | dropped writes |"
    echo "|---|---|---|---|---|---|---|"
    local round desc
    for round in a b c; do
        case $round in
            a) desc="A: paced, nothing else" ;;
            b) desc="B: paced, with GET load" ;;
            c) desc="C: burst, unpaced (fresh LIST and watch)" ;;
        esac
        local f=cm-churn-$round cache_secs
        cache_secs=$(calc "$(r $f .cache_ticks) / $CLK_TCK" 2)
        local capacity="**$(ratio "$(r $f .ok)" "$cache_secs" | cut -d. -f1)**"
        [[ $round == b ]] && capacity="(shared with storing the GETs)"
        [[ $(r $f .dropped_writes) != 0 && $round != b ]] && capacity="n/a: events dropped, stream stopped"
        echo "| $desc | $(r $f .ok) in $(r $f .secs) s ($(r $f .per_sec)/s) | $cache_secs s | $capacity | $(calc "($(r $f .lite_ticks) - $(r $f .cache_ticks)) / $CLK_TCK" 2) s | $(r $f .applied_within_secs) s | $(r $f .dropped_writes) |"
    done
    echo
    echo "Reactor stall (GET Pod through lite, 2 connections, $(calc "$EVENTS / $EVENT_RATE" 1) s each): quiet p50 / p99 / max $(r cm-get-quiet .p50_ms) / $(r cm-get-quiet .p99_ms) / $(r cm-get-quiet .max_ms) ms at $(r cm-get-quiet .rps) req/s; during round B $(r cm-get-events .p50_ms) / $(r cm-get-events .p99_ms) / $(r cm-get-events .max_ms) ms at $(r cm-get-events .rps) req/s — **p99 ×$(ratio "$(r cm-get-events .p99_ms)" "$(r cm-get-quiet .p99_ms)")**."
    echo
    echo "Events seen by the watching clients through lite: A+B $(tail -1 "$RES/cm-watch-ab.out" | jq -r '.events // "n/a"') of $((2 * EVENTS)), C $(tail -1 "$RES/cm-watch-c.out" | jq -r '.events // "n/a"') of $EVENTS. Watch streams the cache stopped following (\"no longer updating\" in lite's log, a stream stops when one of its events is dropped): $(cat "$RES/cm-streams-stopped-ab.count" 2>/dev/null || echo 0) after A+B, $(cat "$RES/cm-streams-stopped.count" 2>/dev/null || echo 0) after C. The cached list read offline at the end: $(r cm-offline .items) items, by last update $(jq -c .tags "$RES/cm-offline.json") (all \"churn-c\" = every event of C applied)."
    echo

    echo "### Targets from issue 8"
    echo
    local get_ratio list_ratio offline_ratio idle peak bin fan
    get_ratio=$(ratio "$(r get-c$CONNS-lite .rps)" "$(r get-c$CONNS-nginx .rps)")
    list_ratio=$(ratio "$(r list100k-c$CONNS-lite .rps)" "$(r list100k-c$CONNS-nginx .rps)")
    offline_ratio=$(ratio "$(r get-c$CONNS-offline-lite .rps)" "$(r get-c$CONNS-lite .rps)")
    idle=$(mib "$(cat "$RES/idle-lite.kb")")
    peak=$(mib "$(cat "$RES/mem-lite-peak.kb")")
    bin=$(mib $((size / 1024)))
    fan=$(r fanout-lite .p99_ms)
    local fan_missed
    fan_missed=$(r fanout-lite .missed)
    echo "| target | measured | met |"
    echo "|---|---|---|"
    echo "| throughput ≥ nginx one worker (GET / LIST 100 KB, $CONNS conns) | ×$get_ratio / ×$list_ratio | $(yes_no "$get_ratio >= 1 && $list_ratio >= 1") |"
    local offline_list_ratio
    offline_list_ratio=$(ratio "$(r list100k-c$CONNS-offline-lite .rps)" "$(r list100k-c$CONNS-lite .rps)")
    echo "| offline cache-hit throughput ≥ online (GET, LIST 100 KB) | ×$offline_ratio / ×$offline_list_ratio | $(yes_no "$offline_ratio >= 1 && $offline_list_ratio >= 1") |"
    echo "| idle RSS < 5 MiB | $idle MiB | $(yes_no "$idle < 5") |"
    echo "| peak RSS < 32 MiB at $WATCHERS watches | $peak MiB | $(yes_no "$peak < 32") |"
    echo "| binary < 5 MiB | $bin MiB | $(yes_no "$bin < 5") |"
    echo "| p99 watch fan-out < 50 ms (and none missed) | $fan ms, $fan_missed missed | $(yes_no "${fan:-1e9} < 50 && $fan_missed == 0") |"
}

# Times lite-apiserver went offline other than when the upstream was stopped on purpose
# (that one logs "Connection refused").
unplanned_outages() {
    grep 'cloud apiserver unreachable' "$WORK/lite.log" | grep -vc 'Connection refused' || true
}

request_label() {
    case $1 in
        get) echo "GET Pod ($(($(stat -c %s "$WORK/fixtures/pod.json") / 1024)) KB)" ;;
        list100k) echo "LIST $(($(stat -c %s "$WORK/fixtures/podlist-100k.json") / 1024)) KB" ;;
        list1m) echo "LIST $(($(stat -c %s "$WORK/fixtures/podlist-1m.json") / 1024)) KB" ;;
    esac
}

target_label() {
    case $1 in
        fake) echo "fake apiserver directly (no nginx hop)" ;;
        direct) echo "upstream nginx → fake (baseline)" ;;
        lite) echo "lite-apiserver → upstream nginx → fake" ;;
        nginx) echo "nginx peer → upstream nginx → fake" ;;
    esac
}

machine() {
    echo "- CPU: $(nproc) × $(lscpu | sed -n 's/^Model name: *//p' | head -1) ($(lscpu | sed -n 's/^Hypervisor vendor: *//p' | head -1 | sed 's/^\(.\)/virtualized, \1/'))"
    echo "- Memory: $(free -h | awk '/^Mem:/ { print $2 " total, " $7 " available at start" }')"
    echo "- Kernel: $(uname -r); $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(rustc --version 2>/dev/null); wrk $(wrk -v 2>&1 | head -1 | awk '{ print $2 }')"
    echo "- lite-apiserver at $(cat "$RES/run-commit"); run $(cat "$RES/run-date"), $(cat "$RES/run-secs") s"
    echo "- Load average (1, 5, 15 min) at the start: $(cat "$RES/run-load-start" 2>/dev/null); at the end: $(cat "$RES/run-load-end" 2>/dev/null) — other jobs on the machine count in it"
    echo "- Everything on one machine: the load generator, lite-apiserver, both nginx and the fake apiserver share the $(nproc) CPUs, so absolute numbers are low and noisy; compare the ratios, which come from the same run."
}

write_doc() {
    local table=$1
    mkdir -p "$(dirname "$DOC")"
    {
        cat <<'EOF'
# Benchmarks

`bench/run.sh` starts, on 127.0.0.1 only, an HTTPS upstream (nginx serving static Pod and
PodList JSON, passing everything else to `examples/fake_apiserver`), lite-apiserver in front of
it, and nginx (one worker, keep-alive upstream, `proxy_ssl_certificate`) as the peer in front
of the same upstream. It measures each figure against a baseline **in the same run** with
`examples/bench_client` (rustls, presents client certificates), and the concurrency sweep
(section 0, `bench/sweep.sh`) also with `wrk` (no client certificate). Machines here are
shared and small: read the ratios.

## How to re-run

```sh
bash bench/run.sh                  # ~6 minutes plus the build; installs nginx, wrk, jq if missing
BENCH_DURATION=10 bash bench/run.sh                   # longer load runs
BENCH_PROFILE=1 bash bench/run.sh                    # also perf-record lite-apiserver (GET, LIST)
BENCH_DOC=/tmp/b.md BENCH_WORK=/tmp/bw bash bench/run.sh   # write elsewhere, keep the scratch dir
BENCH_REPORT_ONLY=1 BENCH_WORK=/tmp/bw bash bench/run.sh   # re-render the tables of that run
BENCH_ONLY=sweep bash bench/run.sh  # only the concurrency sweep (~5 minutes), table in the scratch dir
BENCH_ONLY=memory BENCH_LITE_BINARY=/tmp/old/lite-apiserver bash bench/run.sh  # sections 3-4, another binary
BENCH_ONLY=sweep BENCH_SWEEP_CONNS=256 BENCH_LITE_ARGS="--max-idle-upstream 256" bash bench/run.sh
```

Sweep knobs: `BENCH_SWEEP_CONNS` ("1 16 64 256"), `BENCH_SWEEP_SECS` (`BENCH_DURATION`),
`BENCH_SWEEP_CLIENTS` ("wrk rustls"), `BENCH_SWEEP_REQUESTS` ("get list100k list1m");
`BENCH_SKIP_BUILD=1` measures the binaries already built (a shared tree moves on meanwhile).

Other knobs: `BENCH_REPEAT` (3 interleaved runs per figure, median reported),
`BENCH_CONNECTIONS` (8), `BENCH_WATCHERS` (500), `BENCH_CONFIGMAPS` (5000), `BENCH_EVENTS`
(5000 per round), `BENCH_EVENT_RATE` (1000/s for the paced rounds), `BENCH_UPSTREAM_VERIFY`
(`optional`, `on`, `off`: client-cert check at the upstream), `CARGO_TARGET_DIR`. Raw results (one JSON per run, nginx configs, logs) stay in the scratch
directory printed at the end. Nothing here asserts timings; the "met" column is a report.

## Latest results

EOF
        echo "$table"
        echo
        echo "## Machine"
        echo
        machine
        echo
        cat "$ROOT/bench/NOTES.md" 2>/dev/null || true
    } >"$DOC"
}

# ---------------------------------------------------------------------------------------

# partial_report NAME SECTION...: a BENCH_ONLY run's sections and the machine, to stdout
# and $RES/NAME.md (not $DOC: a part of a run does not replace the whole).
partial_report() {
    local name=$1 section
    shift
    echo $((SECONDS - RUN_STARTED)) >"$RES/run-secs"
    load_average >"$RES/run-load-end"
    {
        for section in "$@"; do "$section"; done
        machine
    } | tee "$RES/$name.md"
}

# Renders the tables from $RES (a finished run) to stdout and $DOC.
render() {
    local table
    table=$(report)
    echo
    echo "$table"
    echo
    machine
    write_doc "$table"
    log "wrote $DOC; raw results in $RES"
}

main() {
    if [[ -n ${BENCH_REPORT_ONLY:-} ]]; then
        [[ -d $RES && -n ${BENCH_WORK:-} ]] || die "BENCH_REPORT_ONLY=1 needs BENCH_WORK=<scratch dir of a finished run>"
        render
        return
    fi
    if [[ -n ${BENCH_LITE_BINARY:-} ]]; then
        echo "$BENCH_LITE_BINARY (BENCH_LITE_BINARY)" >"$RES/run-commit"
    else
        echo "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')" >"$RES/run-commit"
    fi
    date -u '+%Y-%m-%d %H:%M UTC' >"$RES/run-date"
    load_average >"$RES/run-load-start"
    ensure_tools
    build
    make_pki
    "$ROOT/bench/fixtures.sh" "$WORK/fixtures"
    start_fake
    UP_PORT=$(free_port)
    start_nginx upstream "$ROOT/bench/nginx-upstream.conf.in" "$UP_PORT"
    UP_PID=$UPSTREAM_PID
    PEER_PORT=$(free_port)
    start_nginx peer "$ROOT/bench/nginx-peer.conf.in" "$PEER_PORT"
    log "fake :$FAKE_PORT  upstream nginx :$UP_PORT  peer nginx :$PEER_PORT  scratch $WORK"
    start_lite
    # Idle memory: each proxy has served one request (warm TLS, one upstream connection).
    lite_curl -o /dev/null "https://127.0.0.1:$PEER_PORT$GET_PATH"
    sleep 1
    status_kb VmRSS "$LITE_PID" >"$RES/idle-lite.kb"
    status_kb RssAnon "$LITE_PID" >"$RES/idle-lite-anon.kb"
    status_kb RssFile "$LITE_PID" >"$RES/idle-lite-file.kb"
    # shellcheck disable=SC2046
    status_kb VmRSS $(nginx_pids "$PEER_PID") >"$RES/idle-nginx.kb"

    case ${BENCH_ONLY:-} in
        sweep)
            log "(0) concurrency sweep only"
            measure_sweep
            partial_report sweep sweep_report
            return
            ;;
        memory)
            log "(3, 4) memory and watch fan-out only"
            measure_memory lite
            measure_memory nginx
            measure_fanout
            partial_report memory memory_report fanout_report
            return
            ;;
    esac
    log "(1,5) throughput, latency and CPU: direct / lite / nginx"
    measure_proxying
    log "(0) concurrency sweep: wrk and bench_client, $SWEEP_CONNS connections"
    measure_sweep
    profile_lite online get list100k list1m
    # The sweep's 256-connection cells leave up to 256 idle cloud connections in lite's pool
    # (nginx: its keepalive 64) until their idle timeouts (90 s; nginx 60 s): section 3 is
    # about 500 watches, so it starts once those are gone.
    log "(3) waiting for the sweep's idle upstream connections to time out"
    wait_idle_upstreams_closed
    log "(3) memory: 10 identities, $WATCHERS watches, load"
    measure_memory lite
    measure_memory nginx
    log "(4) watch fan-out, $WATCHERS watchers"
    measure_fanout
    log "(7) cache write cost: $CONFIGMAPS objects, 3 × $EVENTS events"
    measure_cache_writes
    log "(2) offline: upstream stopped"
    measure_offline
    profile_lite offline get list100k

    echo $((SECONDS - RUN_STARTED)) >"$RES/run-secs"
    load_average >"$RES/run-load-end"
    render
}

main "$@"
