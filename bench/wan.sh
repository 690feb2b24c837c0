#!/usr/bin/env bash
# bench/wan.sh — bytes on the cloud link (issue 15, item 4): one edge node's traffic
# (kubelet, kube-proxy, flannel: start-up lists and watches, watches during churn at the
# cloud, a re-list) sent (1) straight to the cloud and (2) through lite-apiserver, counted
# at the same place: a byte-counting TCP relay (bench/wan_relay.py) in front of the fake
# apiserver, TLS included. lite-apiserver's own probes and connections are on that link
# too. Seeding and churn go to the fake on another port, with the admin identity, uncounted.
#
#   bench/wan.sh
#
# Cases: direct / lite (default flags) / lite --modify-request-accept=true, with a client
# that sends Accept-Encoding: gzip (client-go's default), then direct / lite with a client
# that does not. Each case starts a fresh fake (the same seed), relay and lite-apiserver.
# Prints a table per case and phase (relay bytes received/sent, lite's own
# lite_apiserver_upstream_bytes_total next to them) and the answers that differed from
# direct; writes the same as markdown to $WAN_WORK/report.md.
#
# Environment: WAN_CHURN_SECS (30), WAN_IDLE_SECS (5: wait before the last reading of the
# counters, once the clients are gone), WAN_WORK (scratch dir, kept; default a mktemp dir),
# WAN_SKIP_BUILD=1 (use the debug binaries already in CARGO_TARGET_DIR), WAN_CASES (a
# space-separated subset of: direct lite lite-json direct-nogzip lite-nogzip),
# CARGO_TARGET_DIR (target). Needs python3, openssl and curl. Debug builds: byte counts do not
# depend on optimisation. About 4 minutes on 2 cores, plus the build.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

CHURN_SECS=${WAN_CHURN_SECS:-30}
IDLE_SECS=${WAN_IDLE_SECS:-5}
CASES=${WAN_CASES:-"direct lite lite-json direct-nogzip lite-nogzip"}
WORK=${WAN_WORK:-$(mktemp -d /tmp/lite-wan.XXXXXX)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/debug
PKI=$WORK/pki
mkdir -p "$WORK/results"

if [[ ${WAN_SKIP_BUILD:-0} != 1 ]]; then
    log "building debug binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --quiet --bin lite-apiserver --example fake_apiserver \
        --example gen_certs)
fi

# The test PKI, plus a flannel identity (CN flannel) signed by the same CA: one mTLS
# identity per component, each configured upstream in lite-apiserver's tls.json.
make_pki() {
    "$BIN/examples/gen_certs" "$PKI" >/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj /CN=flannel -keyout "$PKI/flannel.key" -out "$WORK/flannel.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >"$WORK/flannel.ext"
    openssl x509 -req -in "$WORK/flannel.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
        -CAcreateserial -days 2 -extfile "$WORK/flannel.ext" -out "$PKI/flannel.crt" 2>/dev/null
    local id entries=()
    for id in kubelet kube-proxy flannel; do
        entries+=("{\"cert\": \"$PKI/$id.crt\", \"key\": \"$PKI/$id.key\"}")
    done
    (IFS=,; echo "[${entries[*]}]") >"$WORK/tls.json"
}

# Starts and seeds a fresh fake; sets FAKE_PORT.
start_fake() {
    FAKE_PORT=$(free_port)
    "$BIN/examples/fake_apiserver" --cert "$PKI/server.crt" --key "$PKI/server.key" \
        --client-ca "$PKI/ca.crt" --port "$FAKE_PORT" --bookmark-interval-ms 60000 \
        --history 5000 >"$WORK/fake-$1.out" 2>"$WORK/fake-$1.log" &
    track $!
    FAKE_PID=$!
    wait_port "$FAKE_PORT"
    python3 "$ROOT/bench/wan_traffic.py" seed --fake "127.0.0.1:$FAKE_PORT" --pki "$PKI"
}

# The counted link; sets RELAY_PORT and CONTROL_PORT.
start_relay() {
    RELAY_PORT=$(free_port)
    CONTROL_PORT=$(free_port)
    python3 "$ROOT/bench/wan_relay.py" --listen "$RELAY_PORT" --control "$CONTROL_PORT" \
        --upstream "127.0.0.1:$FAKE_PORT" 2>"$WORK/relay-$1.log" &
    track $!
    RELAY_PID=$!
    wait_port "$RELAY_PORT"
    wait_port "$CONTROL_PORT"
}

# lite-apiserver in front of the relay; sets LITE_PORT and DIAG_PORT.
start_lite() {
    local name=$1
    shift
    LITE_PORT=$(free_port)
    DIAG_PORT=$(free_port)
    "$BIN/lite-apiserver" --ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/server.crt" \
        --tls-private-key-file="$PKI/server.key" --tls-config-file="$WORK/tls.json" \
        --kube-apiserver-url="https://127.0.0.1:$RELAY_PORT" --port="$LITE_PORT" \
        --diagnostics-port="$DIAG_PORT" --file-cache-path="$WORK/cache-$name" "$@" \
        2>"$WORK/lite-$name.log" &
    track $!
    LITE_PID=$!
    wait_port "$LITE_PORT"
    wait_port "$DIAG_PORT"
    local i ready=http://127.0.0.1:$DIAG_PORT/readyz
    for ((i = 0; i < 100; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$ready") == 200 ]] && return 0
        sleep 0.1
    done
    die "lite-apiserver did not see the cloud up ($WORK/lite-$name.log)"
}

# run_case NAME via(direct|lite) gzip(yes|no) [LITE FLAGS...]
run_case() {
    local name=$1 via=$2 gz=$3 target
    shift 3
    log "case $name: fake, seed"
    start_fake "$name"
    start_relay "$name"
    local traffic=(--fake "127.0.0.1:$FAKE_PORT" --pki "$PKI" --relay-control "$CONTROL_PORT"
        --churn-secs "$CHURN_SECS" --idle-secs "$IDLE_SECS" --out "$WORK/results/$name.json")
    [[ $gz == no ]] && traffic+=(--no-gzip)
    if [[ $via == lite ]]; then
        start_lite "$name" "$@"
        target=127.0.0.1:$LITE_PORT
        traffic+=(--diag "$DIAG_PORT")
    else
        target=127.0.0.1:$RELAY_PORT
        traffic+=(--measure-handshake)
    fi
    log "case $name: traffic through $via (churn ${CHURN_SECS}s)"
    python3 "$ROOT/bench/wan_traffic.py" run --target "$target" "${traffic[@]}"
    [[ $via == lite ]] && stop_pid "$LITE_PID"
    stop_pid "$RELAY_PID"
    stop_pid "$FAKE_PID"
}

make_pki
for case in $CASES; do
    case $case in
    direct) run_case direct direct yes ;;
    lite) run_case lite lite yes ;;
    lite-json) run_case lite-json lite yes --modify-request-accept=true ;;
    direct-nogzip) run_case direct-nogzip direct no ;;
    lite-nogzip) run_case lite-nogzip lite no ;;
    *) die "unknown case $case" ;;
    esac
done
python3 "$ROOT/bench/wan_report.py" "$WORK/results" | tee "$WORK/report.md"
log "results in $WORK"
