#!/usr/bin/env bash
# User-space instructions per request, lb-balancer against nginx and HAProxy, counted by
# valgrind's callgrind. Unlike requests/s, the count does not depend on what else the machine
# is doing, so a change of a few percent shows from one run to the next.
#
# Each balancer runs on one thread (lb-balancer --workers 1, nginx with one worker and no
# master, HAProxy nbthread 1) in front of the same two nginx backends, doing the same work as
# in bench/http-bench.sh (X-Forwarded-For, -Proto, -Host and Via on requests, Via on
# responses; lb-balancer and HAProxy insert a route cookie). curl sends N1 requests, then,
# in a second run, N2; the difference of the two totals over N2 - N1 is the cost of a
# request, without start-up and shutdown.
#
# lb-balancer is counted twice: the plain release build ("lb-balancer") and the one built with
# profile-guided optimisation by bench/pgo-build.sh ("lb-pgo"; left out, with the reason, when
# that cannot be built here, and with LB_PGO=0).
#
# Scenarios:
#   keepalive  one client connection for every request, pooled connections to the backends
#   newconn    "Connection: close": a new client connection per request
#
# Only user space is counted: system calls cost the same whichever program makes them, and
# they are most of the CPU time (see BENCHMARKS.md). Instructions are not time either (a
# cache miss costs more than an add), so this complements bench/http-bench.sh, it does not
# replace it. Apache is left out: its prefork/event children do not run under callgrind as
# one process.
#
# Usage: bench/instr-bench.sh [N1 (default 4000)] [N2 (default 12000)]
# Needs: valgrind, haproxy, nginx, curl (Debian packages), cargo; for lb-pgo, llvm-profdata (see
# bench/pgo-build.sh).
set -euo pipefail

N1=${1:-4000}
N2=${2:-12000}
[ "$N2" -gt "$N1" ] || { echo "N2 must be larger than N1" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/lb-instr-bench.XXXXXX)
PIDS=()

# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
trap stop_started EXIT INT TERM

for tool in valgrind haproxy nginx curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

BE1=19301 BE2=19302 PORT=19310

build_lb
LBS="lb-balancer${LBBIN_PGO:+ lb-pgo}"
start_backends $BE1 $BE2
mkdir -p "$WORK/ngl"

cat >"$WORK/nginx.conf" <<EOF
master_process off;
daemon off;
worker_processes 1;
pid $WORK/ngl/nginx.pid;
error_log $WORK/ngl/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream be { server 127.0.0.1:$BE1; server 127.0.0.1:$BE2; keepalive 64; }
    server {
        listen 127.0.0.1:$PORT;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
$NG_SAME_HEADERS
        location / { proxy_pass http://be; }
    }
}
EOF

cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 1000
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$PORT
$HA_SAME_HEADERS
    default_backend be
backend be
    balance roundrobin
    cookie SRV insert indirect nocache
    server b1 127.0.0.1:$BE1 cookie b1
    server b2 127.0.0.1:$BE2 cookie b2
EOF

command_of() {
    case $1 in
    lb-pgo) echo "$LBBIN_PGO --listen 127.0.0.1:$PORT --workers 1 --stickysession ROUTEID --member http://127.0.0.1:$BE1,route=b1 --member http://127.0.0.1:$BE2,route=b2" ;;
    lb-balancer) echo "$LBBIN --listen 127.0.0.1:$PORT --workers 1 --stickysession ROUTEID --member http://127.0.0.1:$BE1,route=b1 --member http://127.0.0.1:$BE2,route=b2" ;;
    nginx) echo "nginx -c $WORK/nginx.conf -p $WORK/ngl" ;;
    haproxy) echo "haproxy -f $WORK/haproxy.cfg -db" ;;
    esac
}

# instructions LB SCENARIO N: the total for N requests, start to stop.
instructions() {
    local lb=$1 scenario=$2 n=$3 out="$WORK/cg.$1.$2.$3" pid i codes
    # shellcheck disable=SC2046
    valgrind --tool=callgrind --callgrind-out-file="$out" $(command_of "$lb") >"$out.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for i in $(seq 1 150); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
        sleep 0.2
    done
    local close=()
    [ "$scenario" = newconn ] && close=(-H "Connection: close")
    codes=$(curl -s -o /dev/null -w '%{http_code}\n' "${close[@]}" "http://127.0.0.1:$PORT/x?[1-$n]" | sort | uniq -c)
    kill -INT "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$(echo "$codes" | awk '{print $2}')" != 200 ]; then
        echo "$lb $scenario: not every answer was 200: $codes" >&2
        exit 1
    fi
    sed -n 's/.*I *refs: *//p' "$out.log" | tr -d ,
}

declare -A PER
for scenario in keepalive newconn; do
    for lb in $LBS nginx haproxy; do
        a=$(instructions "$lb" "$scenario" "$N1")
        b=$(instructions "$lb" "$scenario" "$N2")
        PER[$lb,$scenario]=$(((b - a) / (N2 - N1)))
        printf '%-12s %-10s %8d instructions per request\n' "$lb" "$scenario" "${PER[$lb,$scenario]}"
    done
done

for me in $LBS; do
    printf '\n%s instructions per request as a ratio of each (<1 means fewer):\n' $me
    printf '%-10s %8s %8s\n' scenario nginx haproxy
    for scenario in keepalive newconn; do
        mine=${PER[$me,$scenario]}
        awk -v s="$scenario" -v m="$mine" -v n="${PER[nginx,$scenario]}" -v h="${PER[haproxy,$scenario]}" \
            'BEGIN { printf "%-10s %8.2f %8.2f\n", s, m / n, m / h }'
    done
done
