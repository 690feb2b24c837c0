#!/usr/bin/env bash
# Soak test (issue 7): lite-apiserver in front of the fake kube-apiserver for a long run of
# mixed load — keep-alive GETs of lists and objects, configmap writes, watches opening and
# closing — while the upstream is killed and restarted every minute. Every SAMPLE_SECS it
# prints the proxy's RSS, open fds, threads and connection gauges; at the end a summary:
# requests tried and failed, crashes, RSS/fd drift, cache integrity and whether the cache
# still answers offline (entries lost).
#
#   bench/soak.sh [DURATION_SECS]          default 1800 (30 minutes)
#
# Environment: RESTART_EVERY (60), SAMPLE_SECS (10), WATCHERS (20 per wave), WATCH_HOLD (8),
# LOAD_CONNS (4), CARGO_TARGET_DIR (target), KEEP=1 keeps the work directory.
# Needs curl and python3 (for the SQLite integrity check). Outside CI: it takes the duration.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${1:-1800}
RESTART_EVERY=${RESTART_EVERY:-60}
SAMPLE_SECS=${SAMPLE_SECS:-10}
WATCHERS=${WATCHERS:-20}
WATCH_HOLD=${WATCH_HOLD:-8}
LOAD_CONNS=${LOAD_CONNS:-4}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/lite-soak.XXXXXX)
PKI=$WORK/pki
RES=$WORK/results
mkdir -p "$RES"

source "$ROOT/bench/lib.sh"

on_exit() {
    stop_fake
    cleanup
    if [[ ${KEEP:-0} == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap on_exit EXIT

log "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build --release --quiet --bin lite-apiserver \
    --example fake_apiserver --example gen_certs --example bench_client)
"$BIN/examples/gen_certs" "$PKI" >/dev/null
BENCH=$BIN/examples/bench_client
KUBELET=(--identity "$PKI/kubelet.crt,$PKI/kubelet.key")
ADMIN=(--identity "$PKI/admin.crt,$PKI/admin.key")
CM_PATH=/api/v1/namespaces/default/configmaps
POD_PATH=/api/v1/namespaces/default/pods

FAKE_PORT=$(free_port)
LITE_PORT=$(free_port)
DIAG_PORT=$(free_port)
# The fake is restarted from a background loop, so its current pid lives in a file.
FAKE_PID_FILE=$WORK/fake.pid
fake_pid() { cat "$FAKE_PID_FILE" 2>/dev/null || true; }

start_fake() {
    "$BIN/examples/fake_apiserver" --cert "$PKI/server.crt" --key "$PKI/server.key" \
        --client-ca "$PKI/ca.crt" --port "$FAKE_PORT" --bookmark-interval-ms 2000 \
        >>"$WORK/fake.out" 2>>"$WORK/fake.log" &
    echo $! >"$FAKE_PID_FILE"
    echo "$SECONDS" >>"$RES/fake-starts"
    wait_port "$FAKE_PORT"
}

stop_fake() {
    local pid
    pid=$(fake_pid)
    [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
    [[ -n $pid ]] && wait "$pid" 2>/dev/null || true
}

start_fake
"$BIN/lite-apiserver" --ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/server.crt" \
    --tls-private-key-file="$PKI/server.key" --tls-config-file="$PKI/tls.json" \
    --kube-apiserver-url="https://127.0.0.1:$FAKE_PORT" --port="$LITE_PORT" \
    --diagnostics-port="$DIAG_PORT" --file-cache-path="$WORK/cache" --log-level=info \
    2>"$WORK/lite.log" &
LITE_PID=$!
track "$LITE_PID"
wait_port "$LITE_PORT"
wait_port "$DIAG_PORT"

metric() { curl -s "http://127.0.0.1:$DIAG_PORT/metrics" | awk -v n="lite_apiserver_$1" '$1 == n { print $2 }'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$LITE_PID/status" 2>/dev/null || echo 0; }
fd_count() { ls "/proc/$LITE_PID/fd" 2>/dev/null | wc -l; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$LITE_PID/status" 2>/dev/null || echo 0; }
lite_alive() { kill -0 "$LITE_PID" 2>/dev/null; }

END=$((SECONDS + DURATION))

# Workers: each loops until END, appending one JSON report per run to its file.
get_loop() { # NAME PATH
    while ((SECONDS < END - 2)); do
        "$BENCH" load --addr "127.0.0.1:$LITE_PORT" --path "$2" --ca "$PKI/ca.crt" "${KUBELET[@]}" \
            --connections "$LOAD_CONNS" --duration "$(((END - SECONDS) < 15 ? (END - SECONDS) : 15))" \
            >>"$RES/$1.jsonl" 2>>"$WORK/$1.log" || echo '{"tool_failed":1}' >>"$RES/$1.jsonl"
    done
}
write_loop() {
    while ((SECONDS < END - 2)); do
        "$BENCH" write --addr "127.0.0.1:$LITE_PORT" --path "$CM_PATH" --ca "$PKI/ca.crt" "${ADMIN[@]}" \
            --method POST --count 50 --connections 2 --prefix "soak-$SECONDS-" --rate 20 \
            >>"$RES/writes.jsonl" 2>>"$WORK/writes.log" || echo '{"tool_failed":1}' >>"$RES/writes.jsonl"
    done
}
watch_loop() {
    while ((SECONDS < END - WATCH_HOLD - 5)); do
        "$BENCH" watchers --addr "127.0.0.1:$LITE_PORT" --path "$CM_PATH" --ca "$PKI/ca.crt" "${KUBELET[@]}" \
            --count "$WATCHERS" --hold-secs "$WATCH_HOLD" \
            >>"$RES/watchers.jsonl" 2>>"$WORK/watchers.log" || echo '{"tool_failed":1}' >>"$RES/watchers.jsonl"
    done
}
restart_loop() {
    while ((SECONDS + RESTART_EVERY < END)); do
        sleep "$RESTART_EVERY"
        stop_fake
        sleep 3
        start_fake
    done
}

log "soak for ${DURATION}s: lite pid $LITE_PID on :$LITE_PORT, fake on :$FAKE_PORT restarting every ${RESTART_EVERY}s"
get_loop lists "$CM_PATH" & track $!
get_loop objects "$POD_PATH" & track $!
write_loop & track $!
watch_loop & track $!
restart_loop & track $!

printf '%8s %10s %6s %8s %8s %10s %8s %8s %9s\n' secs rss_kib fds threads clients upstreams watches cloud_up entries | tee "$RES/samples.txt"
STARTED=$SECONDS
while ((SECONDS < END)); do
    sleep "$SAMPLE_SECS"
    lite_alive || { log "lite-apiserver died"; break; }
    printf '%8d %10s %6s %8s %8s %10s %8s %8s %9s\n' $((SECONDS - STARTED)) "$(rss_kib)" "$(fd_count)" "$(threads)" \
        "$(metric open_client_connections)" "$(metric open_upstream_connections)" "$(metric open_watches)" \
        "$(metric cloud_up)" "$(metric cache_entries)" | tee -a "$RES/samples.txt"
done
wait_jobs_deadline=$((SECONDS + 60))
for pid in $(jobs -p); do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < wait_jobs_deadline)); do sleep 1; done
done

CRASHED=0
lite_alive || CRASHED=1
# Idle: every client is gone, so the gauges must be back at zero clients.
sleep 5
IDLE_CLIENTS=$(metric open_client_connections)
IDLE_FDS=$(fd_count)
IDLE_RSS=$(rss_kib)

# Entries lost: with the cloud gone, the list every worker read must still be served.
stop_fake
OFFLINE_STATUS=$(curl -s -D "$RES/offline.head" -o "$RES/offline.json" -w '%{http_code}' --cacert "$PKI/ca.crt" \
    --cert "$PKI/kubelet.crt" --key "$PKI/kubelet.key" "https://127.0.0.1:$LITE_PORT$CM_PATH" || true)
STATS=$(curl -s "http://127.0.0.1:$DIAG_PORT/metrics" | grep -E '^lite_apiserver_(responses_total|cache_|upstream_failures|rejected)' || true)
kill -TERM "$LITE_PID" 2>/dev/null || true
for _ in $(seq 1 100); do lite_alive || break; sleep 0.1; done
INTEGRITY=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("pragma integrity_check").fetchone()[0])' "$WORK/cache/cache.db" 2>&1 || true)

python3 - "$RES" "$OFFLINE_STATUS" "$INTEGRITY" "$CRASHED" "$IDLE_CLIENTS" "$IDLE_FDS" "$IDLE_RSS" "$(wc -l <"$RES/fake-starts")" <<'PY'
import json, os, sys
res, offline, integrity, crashed, idle_clients, idle_fds, idle_rss, fake_starts = sys.argv[1:]
def reports(name):
    path = os.path.join(res, name)
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return [r for r in out if "ready" not in r or "watchers" in r]
loads = reports("lists.jsonl") + reports("objects.jsonl")
writes = reports("writes.jsonl")
watchers = reports("watchers.jsonl")
requests = sum(r.get("requests", 0) for r in loads)
ok = sum(r.get("ok", 0) for r in loads)
statuses = {}
for r in loads:
    for code, n in r.get("statuses", {}).items():
        statuses[code] = statuses.get(code, 0) + n
samples = [l.split() for l in open(os.path.join(res, "samples.txt")).read().splitlines()[1:] if l.strip()]
rss = [int(s[1]) for s in samples if s[1].isdigit()]
fds = [int(s[2]) for s in samples if s[2].isdigit()]
third = max(1, len(rss) // 3)
summary = {
    "samples": len(samples),
    "upstream_starts": int(fake_starts),
    "get_requests": requests, "get_ok": ok, "get_errors": sum(r.get("errors", 0) for r in loads),
    "get_statuses": statuses,
    "writes_ok": sum(r.get("ok", 0) for r in writes), "writes_failed": sum(r.get("failed", 0) for r in writes),
    "watch_waves": len(watchers), "watches_opened": sum(r.get("ready", 0) for r in watchers),
    "watches_failed": sum(r.get("failed", 0) for r in watchers),
    "client_runs_failed": sum(r.get("tool_failed", 0) for r in loads + writes + watchers),
    "proxy_crashed": crashed == "1",
    "rss_kib_first_third_max": max(rss[:third]) if rss else None,
    "rss_kib_last_third_max": max(rss[-third:]) if rss else None,
    "fds_min_max": [min(fds), max(fds)] if fds else None,
    "idle_after": {"clients": idle_clients, "fds": idle_fds, "rss_kib": idle_rss},
    "offline_list_status": offline,
    "offline_list_from_cache": "x-lite-apiserver-cache: hit" in open(os.path.join(res, "offline.head")).read().lower()
        if os.path.exists(os.path.join(res, "offline.head")) else False,
    "cache_integrity": integrity,
}
print(json.dumps(summary, indent=1))
PY
echo "$STATS"
