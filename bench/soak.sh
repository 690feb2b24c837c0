#!/usr/bin/env bash
# Soak test (issues 7 and 17): lite-apiserver in front of the fake kube-apiserver for a long
# run of mixed load while the cloud comes and goes. Load: kubelet's keep-alive LISTs (JSON,
# a list over 128 KiB read with `Accept-Encoding: gzip`, protobuf `Accept`), a pod's reads
# with a service-account bearer token (a new TokenRequest through the proxy every
# TOKEN_EVERY s, each with another expirationSeconds so the proxy's token cache does not
# answer it: offline it then fails and the pod keeps its last token, as kubelet does),
# configmap writes, waves of watches opening and closing. The cloud: the fake is killed
# (-9) and restarted every RESTART_EVERY s; every CUT_EVERY s it stays down for CUT_SECS
# instead (the node runs offline); every ROTATE_EVERY s (first at half of it) it rotates its
# signing key to its next RS256 test key, at most MAX_ROTATIONS times (2: its spare keys).
# The fake forgets rotations when it restarts, so they are replayed at each start (a real
# apiserver keeps its keys).
# Every SAMPLE_SECS it prints the proxy's RSS, open fds, threads and connection gauges; at
# the end a summary: requests tried and failed by kind, crashes, RSS (start, peak, end, the
# peaks of the second and last thirds), fds, cache integrity, and entries lost: with the
# cloud cut, every entry and list the cache database holds must be answered from the cache,
# each with its identity's credentials and its representation.
#
#   bench/soak.sh [DURATION_SECS]          default 1800 (30 minutes)
#
# Environment: RESTART_EVERY (60), CUT_EVERY (300), CUT_SECS (90), TOKEN_EVERY (120),
# ROTATE_EVERY (600), MAX_ROTATIONS (2), SAMPLE_SECS (10), WATCHERS (20 per wave), WATCH_HOLD (8),
# LOAD_CONNS (4), BIG_OBJECTS (200 configmaps of 1 KiB in `edge`, the gzip list),
# CARGO_TARGET_DIR (target), SOAK_SKIP_BUILD=1 uses the release binaries as they are,
# KEEP=1 keeps the work directory. Needs curl and python3. It takes the duration.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${1:-1800}
RESTART_EVERY=${RESTART_EVERY:-60}
CUT_EVERY=${CUT_EVERY:-300}
CUT_SECS=${CUT_SECS:-90}
TOKEN_EVERY=${TOKEN_EVERY:-120}
ROTATE_EVERY=${ROTATE_EVERY:-600}
MAX_ROTATIONS=${MAX_ROTATIONS:-2}
SAMPLE_SECS=${SAMPLE_SECS:-10}
WATCHERS=${WATCHERS:-20}
WATCH_HOLD=${WATCH_HOLD:-8}
LOAD_CONNS=${LOAD_CONNS:-4}
BIG_OBJECTS=${BIG_OBJECTS:-200}
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

if [[ ${SOAK_SKIP_BUILD:-0} != 1 ]]; then
    log "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --release --quiet --bin lite-apiserver \
        --example fake_apiserver --example gen_certs --example bench_client)
fi
"$BIN/examples/gen_certs" "$PKI" >/dev/null
BENCH=$BIN/examples/bench_client
KUBELET=(--identity "$PKI/kubelet.crt,$PKI/kubelet.key")
ADMIN=(--identity "$PKI/admin.crt,$PKI/admin.key")
CM_PATH=/api/v1/namespaces/default/configmaps
POD_PATH=/api/v1/namespaces/default/pods
BIG_PATH=/api/v1/namespaces/edge/configmaps
NODE_PATH=/api/v1/nodes/edge-1
TOKEN_PATH=/api/v1/namespaces/default/serviceaccounts/default/token
PROTOBUF='Accept: application/vnd.kubernetes.protobuf,application/json'

FAKE_PORT=$(free_port)
LITE_PORT=$(free_port)
DIAG_PORT=$(free_port)
# The fake is restarted from a background loop, so its current pid lives in a file.
FAKE_PID_FILE=$WORK/fake.pid
fake_pid() { cat "$FAKE_PID_FILE" 2>/dev/null || true; }
fake_up() { (exec 3<>"/dev/tcp/127.0.0.1/$FAKE_PORT") 2>/dev/null; }
rotations_done() { cat "$WORK/rotations" 2>/dev/null || echo 0; }
# The fake's next signing key (an RS256 test key); prints the HTTP status.
rotate_fake_key() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" \
        --cert "$PKI/admin.crt" --key "$PKI/admin.key" -X POST \
        "https://127.0.0.1:$FAKE_PORT/debug/rotate-signing-key?alg=RS256" || true
}

# The fake starts from its seed: the key rotations so far are replayed and the big list is
# created again, straight at it.
start_fake() {
    local i n
    "$BIN/examples/fake_apiserver" --cert "$PKI/server.crt" --key "$PKI/server.key" \
        --client-ca "$PKI/ca.crt" --port "$FAKE_PORT" --bookmark-interval-ms 2000 \
        >>"$WORK/fake.out" 2>>"$WORK/fake.log" &
    echo $! >"$FAKE_PID_FILE"
    wait_port "$FAKE_PORT"
    n=$(rotations_done)
    for ((i = 0; i < n; i++)); do rotate_fake_key >/dev/null; done
    "$BENCH" write --addr "127.0.0.1:$FAKE_PORT" --path "$BIG_PATH" --ca "$PKI/ca.crt" "${ADMIN[@]}" \
        --method POST --count "$BIG_OBJECTS" --connections 4 --prefix big- --bytes 1024 \
        >>"$RES/big.jsonl" 2>>"$WORK/big.log" || echo '{"tool_failed":1}' >>"$RES/big.jsonl"
    echo "$SECONDS" >>"$RES/fake-starts"
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
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$LITE_PID/status" 2>/dev/null || echo 0; }
fd_count() { ls "/proc/$LITE_PID/fd" 2>/dev/null | wc -l; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$LITE_PID/status" 2>/dev/null || echo 0; }
lite_alive() { kill -0 "$LITE_PID" 2>/dev/null; }

END=$((SECONDS + DURATION))

# Workers: each loops until END, appending one JSON report per run to its file.
run_load() { # NAME SECS CONNS BENCH_ARGS...
    local name=$1 secs=$2 conns=$3
    shift 3
    "$BENCH" load --addr "127.0.0.1:$LITE_PORT" --ca "$PKI/ca.crt" --connections "$conns" \
        --duration "$secs" "$@" >>"$RES/$name.jsonl" 2>>"$WORK/$name.log" ||
        echo '{"tool_failed":1}' >>"$RES/$name.jsonl"
}
get_loop() { # NAME CONNS BENCH_ARGS...
    local name=$1 conns=$2
    shift 2
    while ((SECONDS < END - 2)); do
        run_load "$name" "$(((END - SECONDS) < 15 ? (END - SECONDS) : 15))" "$conns" "$@"
    done
}
# A pod: no client certificate, the latest projected token (10 s runs, so a rotated token
# is picked up soon).
bearer_loop() {
    while ((SECONDS < END - 2)); do
        [[ -s $WORK/token ]] || { sleep 1; continue; }
        run_load bearer "$(((END - SECONDS) < 10 ? (END - SECONDS) : 10))" 2 --path "$CM_PATH" \
            --header "Authorization: Bearer $(tail -n 1 "$WORK/token")"
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

# A TokenRequest for the pod's account through the proxy, as kubelet sends it, for
# expirationSeconds $1. Tokens go to $WORK/token (the work directory only, never logs).
token_request() {
    local body status seconds=$1
    body='{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":'$seconds'}}'
    status=$(curl -s -o "$WORK/token-answer.json" -w '%{http_code}' --max-time 30 --cacert "$PKI/ca.crt" \
        --cert "$PKI/kubelet.crt" --key "$PKI/kubelet.key" -H 'Content-Type: application/json' \
        -H 'Accept: application/json' -X POST --data "$body" "https://127.0.0.1:$LITE_PORT$TOKEN_PATH" || true)
    if [[ $status == 201 ]] &&
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"]["token"])' \
            "$WORK/token-answer.json" >>"$WORK/token" 2>/dev/null; then
        echo "$seconds" >"$WORK/token-seconds"
        echo "{\"at\":$SECONDS,\"ok\":1}" >>"$RES/tokens.jsonl"
        return 0
    fi
    echo "{\"at\":$SECONDS,\"failed\":1,\"status\":\"$status\"}" >>"$RES/tokens.jsonl"
    return 1
}
# Rotates the key while the fake is up (else on a later turn); replayed after restarts.
rotate_key() {
    local status
    fake_up || return 1
    status=$(rotate_fake_key)
    echo "{\"at\":$SECONDS,\"status\":\"$status\"}" >>"$RES/rotations.jsonl"
    [[ $status == 200 ]] && echo $(($(rotations_done) + 1)) >"$WORK/rotations.new" &&
        mv "$WORK/rotations.new" "$WORK/rotations"
}
# A new token every TOKEN_EVERY s (15 s after a failure), and at once after a key rotation.
token_loop() {
    local last=-1000000 next_rotate=$((SECONDS + ROTATE_EVERY / 2)) n=1
    while ((SECONDS < END - 2)); do
        if ((SECONDS >= next_rotate && $(rotations_done) < MAX_ROTATIONS)) && rotate_key; then
            next_rotate=$((SECONDS + ROTATE_EVERY))
            last=-1000000
        fi
        if ((SECONDS - last >= TOKEN_EVERY)); then
            n=$((n + 1))
            if token_request $((3600 + n)); then last=$SECONDS; else last=$((SECONDS - TOKEN_EVERY + 15)); fi
        fi
        sleep 2
    done
}
# Restarts every RESTART_EVERY s; every CUT_EVERY s the cloud stays away for CUT_SECS.
cloud_loop() {
    local n=0 down
    while ((SECONDS + RESTART_EVERY < END)); do
        sleep "$RESTART_EVERY"
        n=$((n + 1))
        down=3
        ((n * RESTART_EVERY % CUT_EVERY == 0)) && down=$CUT_SECS
        ((SECONDS + down + 5 < END)) || break
        stop_fake
        echo "$SECONDS $down" >>"$RES/cloud-downs"
        sleep "$down"
        start_fake
    done
}

log "soak for ${DURATION}s: lite pid $LITE_PID on :$LITE_PORT, fake on :$FAKE_PORT restarting every" \
    "${RESTART_EVERY}s, down ${CUT_SECS}s every ${CUT_EVERY}s, key rotated every ${ROTATE_EVERY}s"
token_request 3601
WORKERS=()
worker() { "$@" & track $!; WORKERS+=($!); }
worker get_loop lists "$LOAD_CONNS" --path "$CM_PATH" "${KUBELET[@]}"
worker get_loop objects "$LOAD_CONNS" --path "$POD_PATH" "${KUBELET[@]}"
worker get_loop gzip 2 --path "$BIG_PATH" "${KUBELET[@]}" --header 'Accept-Encoding: gzip'
worker get_loop protobuf 2 --path "$POD_PATH" "${KUBELET[@]}" --header "$PROTOBUF"
worker get_loop protobuf-node 1 --path "$NODE_PATH" "${KUBELET[@]}" --header "$PROTOBUF"
worker bearer_loop
worker write_loop
worker watch_loop
worker token_loop
worker cloud_loop

printf '%8s %10s %6s %8s %8s %10s %8s %8s %9s\n' secs rss_kib fds threads clients upstreams watches cloud_up entries | tee "$RES/samples.txt"
STARTED=$SECONDS
START_RSS=$(rss_kib)
while ((SECONDS < END)); do
    sleep "$SAMPLE_SECS"
    lite_alive || { log "lite-apiserver died"; break; }
    printf '%8d %10s %6s %8s %8s %10s %8s %8s %9s\n' $((SECONDS - STARTED)) "$(rss_kib)" "$(fd_count)" "$(threads)" \
        "$(metric open_client_connections)" "$(metric open_upstream_connections)" "$(metric open_watches)" \
        "$(metric cloud_up)" "$(metric cache_entries)" | tee -a "$RES/samples.txt"
done
wait_jobs_deadline=$((SECONDS + 60))
for pid in "${WORKERS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < wait_jobs_deadline)); do sleep 1; done
done

CRASHED=0
lite_alive || CRASHED=1
# Idle: every client is gone, so the gauges must be back at zero clients.
sleep 5
IDLE_CLIENTS=$(metric open_client_connections)
IDLE_FDS=$(fd_count)
IDLE_RSS=$(rss_kib)

# Entries lost: with the cloud gone, everything the cache database holds must be answered
# from the cache. The proxy must first see the cloud down (its probe), then each entry and
# list is read with its identity's credentials (python, below).
stop_fake
for _ in $(seq 1 60); do [[ $(metric cloud_up) == 0 ]] && break; sleep 0.5; done
# The last TokenRequest that got a token, asked again: the proxy's cached answer.
OFFLINE_TOKEN=$(tail -n 1 "$WORK/token" 2>/dev/null || true)
OFFLINE_TOKEN_SAME=0
token_request "$(cat "$WORK/token-seconds")" && [[ $(tail -n 1 "$WORK/token") == "$OFFLINE_TOKEN" ]] &&
    OFFLINE_TOKEN_SAME=1
python3 - "$WORK/cache/cache.db" "$PKI" "$LITE_PORT" "$WORK/token" >"$RES/offline-check.json" <<'PY' || true
import hashlib, http.client, json, ssl, sqlite3, sys, urllib.parse
db, pki, port, token_file = sys.argv[1:]
tokens = [t.strip() for t in open(token_file) if t.strip()][::-1]  # newest first
by_hash = {"token:" + hashlib.sha256(t.encode()).hexdigest()[:32]: t for t in tokens}
certs = {"cn:system:node:edge-1": "kubelet", "cn:system:kube-proxy": "kube-proxy", "cn:admin": "admin"}
accepts = {"json": "application/json", "protobuf": "application/vnd.kubernetes.protobuf",
           "table": "application/json;as=Table;v=v1;g=meta.k8s.io",
           "partial-metadata": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
           "apidiscovery-v2": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"}
conns = {}
def conn(cert):
    if cert not in conns:
        ctx = ssl.create_default_context(cafile=f"{pki}/ca.crt")
        if cert:
            ctx.load_cert_chain(f"{pki}/{cert}.crt", f"{pki}/{cert}.key")
        conns[cert] = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=30)
    return conns[cert]
def get(cert, target, headers):
    for attempt in range(2):
        c = conn(cert)
        try:
            c.request("GET", target, headers=headers)
            r = c.getresponse()
            r.read()
            return r.status, (r.getheader("x-lite-apiserver-cache") or "")
        except (OSError, http.client.HTTPException):
            c.close()
            conns.pop(cert, None)
    return 0, ""
def credentials(identity):
    """(cert, [Authorization values to try]) for an identity, or None."""
    if identity in certs:
        return certs[identity], [None]
    if identity in by_hash:
        return None, ["Bearer " + by_hash[identity]]
    if identity.startswith("sa:"):
        return None, ["Bearer " + t for t in tokens]
    return None
def split_key(key):
    n, rest = key.split(":", 1)
    identity, rest = rest[:int(n)], rest[int(n) + 1:]
    return identity, rest.split("\n")
def check(identity, target, representation, expect):
    cred = credentials(identity)
    if cred is None:
        return "unchecked"
    cert, auths = cred
    accept = accepts.get(representation, representation.removeprefix("other:"))
    last = None
    for auth in auths[:8]:
        headers = {"Accept": accept}
        if auth:
            headers["Authorization"] = auth
        last = get(cert, target, headers)
        if last == (expect, "hit"):
            return "answered"
    return f"lost ({last[0]} {last[1] or 'not from the cache'})"
results = {"entries": {}, "lists": {}, "lost": []}
sql = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
for key, status in sql.execute("select key, status from entries"):
    identity, (path, query, representation) = split_key(key)
    if path.startswith("tokenrequest:"):
        verdict = "tokenrequest (checked by the offline TokenRequest)"
    else:
        verdict = check(identity, path + ("?" + query if query else ""), representation, status)
    results["entries"][verdict] = results["entries"].get(verdict, 0) + 1
    if verdict.startswith("lost"):
        results["lost"].append({"identity": identity, "path": path, "query": query,
                                "representation": representation, "verdict": verdict})
for (scope,) in sql.execute("select scope from lists"):
    identity, (path, labels, fields, representation) = split_key(scope)
    query = urllib.parse.urlencode([(n, v) for n, v in (("labelSelector", labels[2:]),
                                                         ("fieldSelector", fields[2:])) if v])
    verdict = check(identity, path + ("?" + query if query else ""), representation, 200)
    results["lists"][verdict] = results["lists"].get(verdict, 0) + 1
    if verdict.startswith("lost"):
        results["lost"].append({"identity": identity, "list": path, "query": query,
                                "representation": representation, "verdict": verdict})
print(json.dumps(results))
PY
PEAK_RSS=$(hwm_kib)
STATS=$(curl -s "http://127.0.0.1:$DIAG_PORT/metrics" | grep -E '^lite_apiserver_(responses_total|cache_|upstream_failures|rejected)' || true)
kill -TERM "$LITE_PID" 2>/dev/null || true
for _ in $(seq 1 100); do lite_alive || break; sleep 0.1; done
INTEGRITY=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("pragma integrity_check").fetchone()[0])' "$WORK/cache/cache.db" 2>&1 || true)

python3 - "$RES" "$INTEGRITY" "$CRASHED" "$IDLE_CLIENTS" "$IDLE_FDS" "$IDLE_RSS" "$START_RSS" "$PEAK_RSS" \
    "$OFFLINE_TOKEN_SAME" <<'PY'
import json, os, sys
res, integrity, crashed, idle_clients, idle_fds, idle_rss, start_rss, peak_rss, token_same = sys.argv[1:]
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
def lines(name):
    path = os.path.join(res, name)
    return open(path).read().split("\n")[:-1] if os.path.exists(path) else []
def load_kind(name):
    runs = reports(name + ".jsonl")
    statuses = {}
    for r in runs:
        for code, n in r.get("statuses", {}).items():
            statuses[code] = statuses.get(code, 0) + n
    tried = sum(r.get("requests", 0) for r in runs)
    ok = sum(r.get("ok", 0) for r in runs)
    return {"tried": tried, "ok": ok, "failed": tried - ok, "transport_errors":
            sum(r.get("errors", 0) for r in runs), "statuses": statuses,
            "runs_failed": sum(r.get("tool_failed", 0) for r in runs)}
writes, watchers, tokens = reports("writes.jsonl"), reports("watchers.jsonl"), reports("tokens.jsonl")
rotations = reports("rotations.jsonl")
samples = [l.split() for l in lines("samples.txt")[1:] if l.strip()]
rss = [int(s[1]) for s in samples if s[1].isdigit()]
fds = [int(s[2]) for s in samples if s[2].isdigit()]
third = max(1, len(rss) // 3)
offline = json.load(open(os.path.join(res, "offline-check.json"))) \
    if os.path.getsize(os.path.join(res, "offline-check.json")) else {"error": "no result"}
downs = [l.split() for l in lines("cloud-downs")]
summary = {
    "samples": len(samples),
    "cloud": {"upstream_starts": len(lines("fake-starts")),
              "restarts": sum(1 for d in downs if d[1] == "3"),
              "cuts": [int(d[0]) for d in downs if d[1] != "3"]},
    "reads": {kind: load_kind(kind) for kind in
              ("lists", "objects", "gzip", "protobuf", "protobuf-node", "bearer")},
    "writes": {"ok": sum(r.get("ok", 0) for r in writes),
               "failed": sum(r.get("failed", 0) for r in writes)},
    "watches": {"waves": len(watchers), "opened": sum(r.get("ready", 0) for r in watchers),
                "failed": sum(r.get("failed", 0) for r in watchers)},
    "token_requests": {"ok": sum(r.get("ok", 0) for r in tokens),
                       "failed": [[r["at"], r["status"]] for r in tokens if r.get("failed")],
                       "offline_answer_same_token": token_same == "1"},
    "key_rotations": [[r["at"], r["status"]] for r in rotations],
    "big_list_fills_failed": sum(r.get("failed", 0) + r.get("tool_failed", 0)
                                 for r in reports("big.jsonl")),
    "client_runs_failed": sum(r.get("tool_failed", 0) for r in writes + watchers),
    "proxy_crashed": crashed == "1",
    "rss_kib": {"start": int(start_rss), "peak_vmhwm": int(peak_rss) if peak_rss.isdigit() else None,
                "sampled_max": max(rss) if rss else None,
                "second_third_max": max(rss[third:2 * third]) if len(rss) >= 3 else None,
                "last_third_max": max(rss[-third:]) if rss else None,
                "end_idle": int(idle_rss) if idle_rss.isdigit() else None},
    "fds_min_max": [min(fds), max(fds)] if fds else None,
    "idle_after": {"clients": idle_clients, "fds": idle_fds},
    "offline_check": offline,
    "cache_integrity": integrity,
}
print(json.dumps(summary, indent=1))
PY
echo "$STATS"
