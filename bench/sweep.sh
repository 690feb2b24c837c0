#!/usr/bin/env bash
# bench/sweep.sh — the concurrency sweep of bench/run.sh (sourced, not run): the same GET
# Pod, LIST 100 KB and LIST 1 MB direct, through lite-apiserver and through the nginx peer,
# at 1, 16, 64 and 256 connections, with two load generators:
#   wrk       (no client certificate: lite-apiserver uses its default identity)
#   rustls    examples/bench_client with kubelet's certificate (lite picks kubelet's identity)
# Per run: req/s, p50/p99, CPU-seconds per 10k requests of the proxy, and upstream connects
# per 10k requests (lite: its own lite_apiserver_upstream_connects_total; nginx: accepts
# counted by the upstream nginx's stub_status). Each proxy gets a 1 s warm-up at the same
# concurrency first, so the connects are those of steady keep-alive load. The warm-up is
# bench_client's (with the same identity as the client measured: none for wrk): it lets its
# requests finish, where wrk hangs up with requests in flight, and a proxy closes the
# upstream connections of those (nginx too) — the next run would count their replacements.
#
# Knobs: BENCH_SWEEP_CONNS ("1 16 64 256"), BENCH_SWEEP_SECS (BENCH_DURATION),
# BENCH_SWEEP_CLIENTS ("wrk rustls"), BENCH_SWEEP_REQUESTS ("get list100k list1m").

SWEEP_CONNS=${BENCH_SWEEP_CONNS:-1 16 64 256}
SWEEP_SECS=${BENCH_SWEEP_SECS:-${BENCH_DURATION:-3}}
SWEEP_CLIENTS=${BENCH_SWEEP_CLIENTS:-wrk rustls}
SWEEP_REQUESTS=${BENCH_SWEEP_REQUESTS:-get list100k list1m}

# Connections the upstream nginx has accepted since it started (stub_status).
upstream_accepts() {
    curl -sS -k "https://127.0.0.1:$UP_PORT/bench-nginx-status" 2>/dev/null | awk 'NR == 3 { print $1 + 0 }'
}

# The pids whose CPU a target's run is charged with: the proxy (or, direct, the upstream).
target_pids() {
    case $1 in
        lite) echo "$LITE_PID" ;;
        nginx) nginx_pids "$PEER_PID" ;;
        direct) nginx_pids "$UP_PID" ;;
    esac
}

# The wrk script printing one JSON line with the figures bench_client reports.
write_wrk_script() {
    WRK_SCRIPT=$WORK/wrk-json.lua
    cat >"$WRK_SCRIPT" <<'EOF'
done = function(summary, latency, requests)
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format(
        '{"rps":%.3f,"requests":%d,"errors":%d,"non200":%d,"p50_ms":%.3f,"p99_ms":%.3f,"secs":%.3f}\n',
        summary.requests / secs, summary.requests, e.connect + e.read + e.write + e.timeout,
        e.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000, secs))
end
EOF
}

# generate CLIENT TARGET REQUEST CONNS SECS: one load run; prints normalized JSON.
generate() {
    local client=$1 target=$2 request=$3 conns=$4 secs=$5
    local url="https://$(addr_of "$target")$(path_of "$request")"
    case $client in
        wrk)
            wrk -t1 -c"$conns" -d"${secs}s" --timeout 10s -s "$WRK_SCRIPT" "$url" 2>&1 | grep '^{' | tail -1
            ;;
        rustls)
            "$BENCH" load --addr "$(addr_of "$target")" --path "$(path_of "$request")" --ca "$PKI/ca.crt" \
                --connections "$conns" --duration "$secs" --identity "$KUBELET" |
                jq -c '{rps, requests, errors, non200: (.requests - .ok), p50_ms, p99_ms}'
            ;;
    esac
}

# warm_up CLIENT TARGET REQUEST CONNS: 1 s of the same load, ended gracefully.
warm_up() {
    local client=$1 target=$2 request=$3 conns=$4 identity=()
    [[ $client == wrk ]] || identity=(--identity "$KUBELET")
    "$BENCH" load --addr "$(addr_of "$target")" --path "$(path_of "$request")" --ca "$PKI/ca.crt" \
        --connections "$conns" --duration 1 "${identity[@]}" >/dev/null
}

# sweep_run CLIENT TARGET REQUEST CONNS: a timed run with CPU and connects alongside.
sweep_run() {
    local client=$1 target=$2 request=$3 conns=$4 name pids ticks0 up0 accepts0 connects0 resumed0
    name=sweep-$client-$request-c$conns-$target
    pids=$(target_pids "$target")
    # shellcheck disable=SC2086
    ticks0=$(cpu_ticks $pids)
    up0=$(cpu_ticks $(nginx_pids "$UP_PID"))
    accepts0=$(upstream_accepts)
    connects0=$(metric upstream_connects_total)
    resumed0=$(metric upstream_resumed_total)
    generate "$client" "$target" "$request" "$conns" "$SWEEP_SECS" >"$RES/$name.raw"
    [[ -s $RES/$name.raw ]] || echo '{"rps":0,"requests":0,"errors":-1,"non200":0,"p50_ms":null,"p99_ms":null}' >"$RES/$name.raw"
    # shellcheck disable=SC2086
    jq --argjson ticks $(($(cpu_ticks $pids) - ticks0)) \
        --argjson up $(($(cpu_ticks $(nginx_pids "$UP_PID")) - up0)) \
        --argjson accepts $(($(upstream_accepts) - accepts0)) \
        --argjson connects $(($(metric upstream_connects_total) - connects0)) \
        --argjson resumed $(($(metric upstream_resumed_total) - resumed0)) \
        '. + {ticks: $ticks, upstream_ticks: $up, upstream_accepts: $accepts, lite_connects: $connects, lite_resumed: $resumed}' \
        "$RES/$name.raw" >"$RES/$name.json"
    log "$(printf '%-36s %9s req/s  p50 %7s  p99 %7s ms  errors %s non-200 %s  upstream accepts %s' "$name" \
        "$(r "$name" .rps)" "$(r "$name" .p50_ms)" "$(r "$name" .p99_ms)" "$(r "$name" .errors)" \
        "$(r "$name" .non200)" "$(r "$name" .upstream_accepts)")"
}

measure_sweep() {
    write_wrk_script
    local client request conns target
    for client in $SWEEP_CLIENTS; do
        for request in $SWEEP_REQUESTS; do
            for conns in $SWEEP_CONNS; do
                for target in lite nginx; do
                    warm_up "$client" "$target" "$request" "$conns"
                done
                for target in direct lite nginx; do
                    sweep_run "$client" "$target" "$request" "$conns"
                done
            done
        done
    done
    curl -sS "http://127.0.0.1:$DIAG_PORT/metrics" >"$RES/metrics-after-sweep.txt" || true
}

# connects per 10k requests of lite's run (its own counter)
connects10k() {
    local name=$1 field=$2
    calc "$(r "$name" ".$field") / ($(r "$name" .requests) + 0.000001) * 10000" 1
}

# nginx's connects per 10k: what the upstream accepted during its run, less what lite's
# cloud prober opened meanwhile (one connection per probe, every 5 s; taken from the lite
# run of the same cell, where accepts - lite's own connects are the prober's).
nginx_connects10k() {
    local n=$1 l=$2 probes
    probes=$(( $(r "$l" .upstream_accepts) - $(r "$l" .lite_connects) ))
    calc "(($(r "$n" .upstream_accepts) - $probes) > 0 ? ($(r "$n" .upstream_accepts) - $probes) : 0) / ($(r "$n" .requests) + 0.000001) * 10000" 1
}

# Whether the direct run was at least twice the faster proxy (the generator kept up).
generator_margin() {
    local d=$1 l=$2 n=$3 best
    best=$(awk "BEGIN { print ($l > $n) ? $l : $n }")
    local x
    x=$(ratio "$d" "$best")
    if awk "BEGIN { exit !($x >= 2) }"; then echo "×$x"; else echo "**×$x (<2)**"; fi
}

sweep_report() {
    local client request conns
    echo "### 0. Concurrency sweep: direct / lite-apiserver / nginx, 1 to $(echo "$SWEEP_CONNS" | awk '{ print $NF }') connections"
    echo
    echo "One run of $SWEEP_SECS s per cell after a 1 s warm-up of each proxy; CPU is the proxy's"
    echo "(lite: all threads; nginx: master + worker) per 10k requests; connects are new upstream"
    echo "connections per 10k requests during the timed run (lite: its counter, which leaves out its cloud"
    echo "prober's one connection per probe; nginx: the upstream's accept count less those probes)."
    echo "\"gen\" is direct ÷ the faster proxy: ≥ 2 means the load generator was not the limit."
    echo
    echo "| client | request | conns | direct req/s | lite req/s | nginx req/s | **lite/nginx** | lite/direct | p50 ms d / l / n | p99 ms d / l / n | p99 l/n | CPU s/10k lite / nginx (**l/n**) | connects/10k lite / nginx | gen |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for client in $SWEEP_CLIENTS; do
        for request in $SWEEP_REQUESTS; do
            for conns in $SWEEP_CONNS; do
                local p=sweep-$client-$request-c$conns
                local d=$p-direct l=$p-lite n=$p-nginx lcpu ncpu
                [[ -f $RES/$l.json ]] || continue
                lcpu=$(per10k "$(r $l .ticks)" "$(r $l .requests)")
                ncpu=$(per10k "$(r $n .ticks)" "$(r $n .requests)")
                echo "| $client | $(request_label "$request") | $conns | $(r $d .rps) | $(r $l .rps) | $(r $n .rps) | **$(ratio "$(r $l .rps)" "$(r $n .rps)")** | $(ratio "$(r $l .rps)" "$(r $d .rps)") | $(r $d .p50_ms) / $(r $l .p50_ms) / $(r $n .p50_ms) | $(r $d .p99_ms) / $(r $l .p99_ms) / $(r $n .p99_ms) | $(ratio "$(r $l .p99_ms)" "$(r $n .p99_ms)") | $lcpu / $ncpu (**$(ratio "$lcpu" "$ncpu")**) | $(connects10k $l lite_connects) / $(nginx_connects10k $n $l) | $(generator_margin "$(r $d .rps)" "$(r $l .rps)" "$(r $n .rps)") |"
            done
        done
    done
    echo
    echo "Errors or non-200 answers in the sweep: $(jq -s 'map(.errors + .non200) | add' "$RES"/sweep-*.json). TLS handshakes to the cloud resumed during the sweep: $(jq -s 'map(.lite_resumed) | add' "$RES"/sweep-*-lite.json) of $(jq -s 'map(.lite_connects) | add' "$RES"/sweep-*-lite.json) timed-run connects."
    echo
}
