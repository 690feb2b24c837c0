#!/usr/bin/env bash
# Helpers for bench/run.sh: process bookkeeping, loopback ports, /proc readings, number
# formatting. Sourced, not run.

CLK_TCK=$(getconf CLK_TCK)
STARTED_PIDS=()
USED_PORTS=" "

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# Remembers a pid we started, so cleanup stops it (and only it).
track() { STARTED_PIDS+=("$1"); }

stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
}

# A free TCP port on 127.0.0.1 (not handed out before in this run).
free_port() {
    local port _ low=32768 high=60999 from to
    # Outside the kernel's ephemeral range: the load opens thousands of client connections,
    # whose local ports would otherwise collide with a listener picked a moment earlier.
    read -r low high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    if ((low > 12000)); then from=10000 to=$low; else from=$((high + 1)) to=65536; fi
    for _ in $(seq 1 200); do
        port=$((from + RANDOM % (to - from)))
        [[ $USED_PORTS == *" $port "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            USED_PORTS+="$port "
            echo "$port"
            return 0
        fi
    done
    die "no free port"
}

wait_port() {
    local port=$1 i
    for ((i = 0; i < 200; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    die "nothing listens on 127.0.0.1:$port"
}

# utime+stime, in clock ticks, summed over the given pids (all their threads).
cpu_ticks() {
    local total=0 pid f
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || continue
        read -r -a f < <(sed 's/^.*) //' "/proc/$pid/stat")
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# utime+stime of the thread of $1 whose name is $2.
thread_ticks() {
    local pid=$1 name=$2 task f
    for task in /proc/"$pid"/task/*; do
        if [[ $(cat "$task/comm" 2>/dev/null) == "$name" ]]; then
            read -r -a f < <(sed 's/^.*) //' "$task/stat")
            echo $((f[11] + f[12]))
            return
        fi
    done
    echo 0
}

# Waits until the thread $2 of $1 stops using CPU (3 quiet samples 200 ms apart, at most
# $3 seconds); prints its ticks.
wait_thread_idle() {
    local pid=$1 name=$2 limit=$3 last now quiet=0 deadline=$((SECONDS + $3))
    last=$(thread_ticks "$pid" "$name")
    while ((quiet < 3 && SECONDS < deadline)); do
        sleep 0.2
        now=$(thread_ticks "$pid" "$name")
        if ((now == last)); then quiet=$((quiet + 1)); else quiet=0; fi
        last=$now
    done
    echo "$last"
}

# A /proc/<pid>/status field in KiB (VmRSS, VmHWM), summed over the given pids.
status_kb() {
    local field=$1 total=0 pid v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# The pids of an nginx master and its workers.
nginx_pids() { echo "$1" $(pgrep -P "$1" | tr '\n' ' '); }

# Arithmetic on decimals: calc 'a / b' (prints n/a on errors such as division by zero).
calc() { awk "BEGIN { x = ($1); printf \"%.${2:-2}f\", x }" 2>/dev/null || echo "n/a"; }
ratio() {
    if [[ -z $1 || -z $2 || $1 == null || $2 == null ]] || awk "BEGIN { exit !($2 == 0) }"; then
        echo "n/a"
    else
        calc "$1 / $2"
    fi
}
mib() { calc "$1 / 1024" 1; }

# The 1, 5 and 15 minute load averages.
load_average() { cut -d' ' -f1-3 /proc/loadavg; }

# A field of a JSON result file.
field() { jq -r "$2" "$1"; }
