#!/usr/bin/env bash
# lb-balancer against HAProxy (mode http), nginx (upstream keepalive) and Apache
# mod_proxy_balancer, in one run, with wrk. Everything listens on loopback; every process this
# script starts is killed at exit.
#
# Scenarios (each LB in front of the same two nginx backends answering a 6-byte body):
#   keepalive  wrk keeps its connections open (keep-alive to the LB and from the LB)
#   newconn    "Connection: close": a new client connection per request
#   sticky     a route cookie on every request (ROUTEID for lb-balancer and Apache,
#              SRV for HAProxy's inserted cookie, hash $cookie_ROUTEID for nginx)
#   light      4 connections, keep-alive: well under saturation (wrk cannot fix a rate, so
#              this stands in for "half load"); the added p50 over direct is reported
# Stickiness is configured for the sticky scenario only. In the others, no balancer has it:
# lb-balancer with --stickysession, and HAProxy with `cookie ... insert`, add a Set-Cookie
# to each response that comes without the cookie, which nginx and Apache do not (a separate
# lb-balancer, HAProxy frontend and Apache virtual host serve the sticky runs). Runs before
# 2026-11-27 12:30 UTC had lb-balancer and HAProxy insert the cookie in every scenario.
# plus "direct" (wrk straight at one backend) as the floor. lb-balancer is measured twice: the
# plain release build ("lb-balancer") and the one built with profile-guided optimisation by
# bench/pgo-build.sh ("lb-pgo"; left out, with the reason, when that cannot be built here, and
# with LB_PGO=0). Figures are requests/s, p50/p99
# latency and the balancer's CPU time per request (user + system, from /proc, summed over
# its processes); the ratios compare lb-balancer with each of the others in the same run.
#
# Same work: lb-balancer adds X-Forwarded-For, -Proto, -Host and Via to requests, and Via to
# responses; by default the peers are configured to do the same (HAProxy option forwardfor and
# set-header rules, nginx proxy_set_header and add_header, Apache ProxyVia On beside its
# default X-Forwarded-*). PEER_HEADERS=defaults leaves the peers at their defaults instead
# (HAProxy and nginx then add no forwarding fields), as runs before 2026-11-26 did.
#
# The machines are shared and noisy: every run is repeated ROUNDS times (default 2),
# interleaved across servers, and the best req/s of each is kept (with its latencies).
#
# Usage: bench/http-bench.sh [seconds per run (default 8)] [connections (default 50)] [rounds (default 2)]
# Needs: wrk, haproxy, nginx, apache2 (Debian packages), cargo; for lb-pgo, llvm-profdata (see
# bench/pgo-build.sh).
set -euo pipefail

DUR=${1:-8}
CONNS=${2:-50}
ROUNDS=${3:-2}
THREADS=2
PEER_HEADERS=${PEER_HEADERS:-same}
case $PEER_HEADERS in same | defaults) ;; *) echo "PEER_HEADERS must be same or defaults" >&2; exit 2 ;; esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/lb-http-bench.XXXXXX)
PIDS=()
declare -A SRVPID

# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
# Apache runs as a daemon of its own (its pid file), not in PIDS.
cleanup() {
    [ -f "$WORK/apache.pid" ] && kill "$(cat "$WORK/apache.pid")" 2>/dev/null || true
    sleep 0.5
    stop_started
}
trap cleanup EXIT INT TERM

for tool in wrk haproxy nginx apache2; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

# Ports of the sticky runs' balancers, then of the others' (LBN ... APN: no stickiness).
BE1=19101 BE2=19102 LB=19110 HA=19111 NG=19112 AP=19113 LBPGO=19114
LBN=19115 LBPGON=19116 HAN=19117 APN=19118

build_lb
start_backends $BE1 $BE2
mkdir -p "$WORK/ngl"

# lb-balancer: start_lb NAME BIN PORT [ARGS...], two members.
start_lb() {
    local name=$1 bin=$2 port=$3
    shift 3
    "$bin" --listen 127.0.0.1:"$port" "$@" \
        --member http://127.0.0.1:$BE1,route=b1 --member http://127.0.0.1:$BE2,route=b2 >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    SRVPID[$name]=$!
}
start_lb lb-balancer,sticky "$LBBIN" $LB --stickysession ROUTEID
start_lb lb-balancer "$LBBIN" $LBN
LBS=lb-balancer
if [ -n "$LBBIN_PGO" ]; then
    start_lb lb-pgo,sticky "$LBBIN_PGO" $LBPGO --stickysession ROUTEID
    start_lb lb-pgo "$LBBIN_PGO" $LBPGON
    LBS="lb-balancer lb-pgo"
fi
SERVERS="$LBS haproxy nginx apache"
PORTS="$LB $LBN ${LBBIN_PGO:+$LBPGO $LBPGON} $HA $HAN $NG $AP $APN"

# What the peers add, when they do the same work as lb-balancer.
HA_HEADERS= NG_HEADERS= AP_VIA=Off
if [ "$PEER_HEADERS" = same ]; then
    HA_HEADERS=$HA_SAME_HEADERS
    NG_HEADERS=$NG_SAME_HEADERS
    AP_VIA=On
fi

# HAProxy.
cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4000
    nbthread 2
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAN
$HA_HEADERS
    default_backend be
backend be
    balance roundrobin
    server b1 127.0.0.1:$BE1
    server b2 127.0.0.1:$BE2
frontend fe_sticky
    bind 127.0.0.1:$HA
$HA_HEADERS
    default_backend be_sticky
backend be_sticky
    balance roundrobin
    cookie SRV insert indirect nocache
    server b1 127.0.0.1:$BE1 cookie b1
    server b2 127.0.0.1:$BE2 cookie b2
EOF
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
SRVPID[haproxy]=$!

# nginx as the balancer (upstream keepalive; the sticky run hashes the cookie).
cat >"$WORK/lbnginx.conf" <<EOF
worker_processes 2;
pid $WORK/ngl/nginx.pid;
error_log $WORK/ngl/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream be { server 127.0.0.1:$BE1; server 127.0.0.1:$BE2; keepalive 64; }
    upstream sticky { hash \$cookie_ROUTEID; server 127.0.0.1:$BE1; server 127.0.0.1:$BE2; keepalive 64; }
    server {
        listen 127.0.0.1:$NG;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
$NG_HEADERS
        location / { proxy_pass http://be; }
        location /sticky { proxy_pass http://sticky; }
    }
}
EOF
nginx -c "$WORK/lbnginx.conf" -p "$WORK/ngl" -g 'daemon off;' &
PIDS+=($!)
SRVPID[nginx]=$!

# Apache mod_proxy_balancer (event MPM).
M=/usr/lib/apache2/modules
cat >"$WORK/apache.conf" <<EOF
ServerRoot "$WORK"
PidFile $WORK/apache.pid
ErrorLog $WORK/apache-error.log
LogLevel error
Listen 127.0.0.1:$AP
Listen 127.0.0.1:$APN
ServerName localhost
User nobody
Group nogroup
LoadModule mpm_event_module $M/mod_mpm_event.so
LoadModule authz_core_module $M/mod_authz_core.so
LoadModule unixd_module $M/mod_unixd.so
LoadModule slotmem_shm_module $M/mod_slotmem_shm.so
LoadModule proxy_module $M/mod_proxy.so
LoadModule proxy_http_module $M/mod_proxy_http.so
LoadModule proxy_balancer_module $M/mod_proxy_balancer.so
LoadModule lbmethod_byrequests_module $M/mod_lbmethod_byrequests.so
LoadModule headers_module $M/mod_headers.so
StartServers 2
ThreadsPerChild 64
MaxRequestWorkers 256
KeepAlive On
MaxKeepAliveRequests 0
<Proxy balancer://be>
    BalancerMember http://127.0.0.1:$BE1 route=b1
    BalancerMember http://127.0.0.1:$BE2 route=b2
</Proxy>
<Proxy balancer://sticky>
    BalancerMember http://127.0.0.1:$BE1 route=b1
    BalancerMember http://127.0.0.1:$BE2 route=b2
    ProxySet stickysession=ROUTEID
</Proxy>
<VirtualHost 127.0.0.1:$AP>
    ProxyPass / balancer://sticky/
</VirtualHost>
<VirtualHost 127.0.0.1:$APN>
    ProxyPass / balancer://be/
</VirtualHost>
ProxyVia $AP_VIA
EOF
[ -f $M/mod_unixd.so ] || sed -i '/mod_unixd/d' "$WORK/apache.conf"
apache2 -f "$WORK/apache.conf" -DFOREGROUND >"$WORK/apache.log" 2>&1 &
PIDS+=($!)
SRVPID[apache]=$!

# Wait until everything answers.
for port in $BE1 $BE2 $PORTS; do
    ok=0
    for _ in $(seq 1 100); do
        if curl -fs -o /dev/null "http://127.0.0.1:$port/"; then ok=1; break; fi
        sleep 0.1
    done
    [ $ok = 1 ] || { echo "port $port did not answer" >&2; cat "$WORK"/*.log >&2 || true; exit 1; }
done

# CPU clock ticks (user + system) used so far by PID and its child processes (nginx's and
# Apache's workers).
cpu_ticks() {
    local pid=$1 t=0 p
    for p in $pid $(pgrep -P "$pid" || true); do
        [ -r /proc/$p/stat ] || continue
        t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat)))
    done
    echo $t
}

# run [-p PID] URL [wrk header args...] -> "rps p50_ms p99_ms cpu_us_per_request"
# (the last is "-" without -p: the CPU time PID's process tree used per request served)
run() {
    local pid=
    if [ "$1" = -p ]; then pid=$2; shift 2; fi
    local url=$1; shift
    local out t0=0 t1=0
    [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
    out=$(wrk -t$THREADS -c"$CONNS" -d"${DUR}s" --latency "$@" "$url" 2>&1)
    [ -n "$pid" ] && t1=$(cpu_ticks "$pid")
    local rps p50 p99 errs total cpu=-
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    if [ -n "$pid" ] && [ "${total:-0}" -gt 0 ]; then
        cpu=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$total" \
            'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    fi
    errs=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' <<<"$out")
    [ -n "$errs" ] && echo "  note ($url $*): $errs" >&2
    echo "$rps $(ms "$p50") $(ms "$p99") $cpu"
}

# wrk latency like 1.23ms / 456.00us / 1.20s -> milliseconds
ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "?" }'
}

declare -A R
echo "warming up..." >&2
for port in $PORTS; do wrk -t1 -c10 -d1s "http://127.0.0.1:$port/" >/dev/null 2>&1; done

echo "running: ${DUR}s per run, $CONNS connections, $THREADS wrk threads, best of $ROUNDS, peer headers: $PEER_HEADERS" >&2
# keep KEY "rps p50 p99": store when better than what is there
keep() {
    local key=$1 val=$2 old
    old=${R[$key]:-}
    if [ -z "$old" ] || awk -v a="${val%% *}" -v b="${old%% *}" 'BEGIN { exit !(a > b) }'; then
        R[$key]=$val
    fi
}
light() {
    local saved=$CONNS
    CONNS=4
    run "$@"
    CONNS=$saved
}
for round in $(seq 1 "$ROUNDS"); do
    keep direct,light "$(light "http://127.0.0.1:$BE1/")"
    for lb in $SERVERS; do
        case $lb in lb-balancer) port=$LBN ;; lb-pgo) port=$LBPGON ;; haproxy) port=$HAN ;; nginx) port=$NG ;; apache) port=$APN ;; esac
        keep "$lb,light" "$(light "http://127.0.0.1:$port/")"
    done
    keep direct,keepalive "$(run "http://127.0.0.1:$BE1/")"
    keep direct,newconn "$(run "http://127.0.0.1:$BE1/" -H "Connection: close")"
    for sc in keepalive newconn sticky; do
        for lb in $SERVERS; do
            case $lb in
                lb-balancer) port=$LBN; sport=$LB; ck="ROUTEID=.b1" ;;
                lb-pgo) port=$LBPGON; sport=$LBPGO; ck="ROUTEID=.b1" ;;
                haproxy) port=$HAN; sport=$HA; ck="SRV=b1" ;;
                nginx) port=$NG; sport=$NG; ck="ROUTEID=.b1" ;;
                apache) port=$APN; sport=$AP; ck="ROUTEID=.b1" ;;
            esac
            path=/
            pid=${SRVPID[$lb]}
            if [ $sc = sticky ]; then
                port=$sport
                pid=${SRVPID[$lb,sticky]:-$pid}
            fi
            case $sc in
                keepalive) v=$(run -p "$pid" "http://127.0.0.1:$port/") ;;
                newconn) v=$(run -p "$pid" "http://127.0.0.1:$port/" -H "Connection: close") ;;
                sticky)
                    [ $lb = nginx ] && path=/sticky
                    v=$(run -p "$pid" "http://127.0.0.1:$port$path" -H "Cookie: $ck") ;;
            esac
            echo "  round $round $sc $lb: $v" >&2
            keep "$lb,$sc" "$v"
        done
    done
done

printf '\n%-10s %-12s %12s %9s %9s %9s\n' scenario server "req/s" "p50 ms" "p99 ms" "CPU us/r"
for sc in keepalive newconn sticky; do
    if [ $sc != sticky ]; then
        read -r rps p50 p99 _ <<<"${R[direct,$sc]}"
        printf '%-10s %-12s %12s %9s %9s\n' $sc "(direct)" "$rps" "$p50" "$p99"
    fi
    for lb in $SERVERS; do
        read -r rps p50 p99 cpu <<<"${R[$lb,$sc]}"
        printf '%-10s %-12s %12s %9s %9s %9s\n' $sc $lb "$rps" "$p50" "$p99" "$cpu"
    done
done
printf '(CPU us/r: CPU time, user + system, of the balancer'"'"'s processes per request, in the\n'
printf ' round kept; on a 2-core machine shared with wrk and the backends, the lower it is the\n'
printf ' more of the machine is left for the rest.)\n'

printf '\nlight load (4 connections): p50 added over direct\n'
read -r _ d50 _ <<<"${R[direct,light]}"
for lb in $SERVERS; do
    read -r _ p50 _ <<<"${R[$lb,light]}"
    awk -v n=$lb -v a="$p50" -v d="$d50" 'BEGIN { printf "%-12s p50 %6.3f ms  added %6.3f ms\n", n, a, a - d }'
done

for me in $LBS; do
    printf '\n%s req/s as a ratio of each (>1 means %s is faster):\n' $me $me
    printf '%-10s %9s %9s %9s\n' scenario haproxy nginx apache
    for sc in keepalive newconn sticky; do
        read -r mine _ _ <<<"${R[$me,$sc]}"
        line=$(printf '%-10s' $sc)
        for lb in haproxy nginx apache; do
            read -r theirs _ _ <<<"${R[$lb,$sc]}"
            line+=$(awk -v a="$mine" -v b="$theirs" 'BEGIN { if (b > 0) printf " %9.2f", a / b; else printf " %9s", "?" }')
        done
        echo "$line"
    done
done
