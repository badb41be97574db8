#!/usr/bin/env bash
# Layer-4 comparison: pen, HAProxy (mode tcp), nginx stream and lb-pen (default threads
# and one worker thread) in front of the same two nginx backends, measured in one run.
#
#   bench/tcp-bench.sh            (DURATION=8 CONNS=50 BULK_MIB=256 IDLE=1000 ROUNDS=3 to tune)
#
# The machines are shared and noisy (the same proxy moved 15% between two runs): the rates
# are measured ROUNDS times, interleaved across the proxies, and the best of each is kept.
#
# Measures, per proxy and directly against one backend:
#   keep-alive req/s      wrk -t2 -c$CONNS -d${DURATION}s
#   new conn req/s        the same with -H "Connection: close"
#   bulk MB/s             4 parallel curl downloads of a $BULK_MIB MiB file
#   RSS (MiB)             VmRSS summed over the proxy's processes while it holds $IDLE
#                         idle proxied connections (each made one request first), and
#                         VmHWM (the peak over the whole run, all phases) beside it
# lb-pen-copy is lb-pen with --no-splice (buffered relay), for the splice decision.
# The script prints a table with ratios to pen and HAProxy. Everything listens on 127.0.0.1;
# every process started here is killed at exit.
set -euo pipefail

DURATION=${DURATION:-8}
CONNS=${CONNS:-50}
BULK_MIB=${BULK_MIB:-256}
IDLE=${IDLE:-1000}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LB_PEN=${LB_PEN:-$ROOT/target/release/lb-pen}

for tool in pen haproxy nginx wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "tcp-bench: $tool is not installed" >&2; exit 1; }
done
STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
[ -f "$STREAM_MODULE" ] || { echo "tcp-bench: nginx stream module missing ($STREAM_MODULE)" >&2; exit 1; }
if [ ! -x "$LB_PEN" ]; then
    (cd "$ROOT" && cargo build --release -p lb-examples --bin lb-pen) >&2
fi

W=$(mktemp -d /tmp/tcp-bench.XXXXXX)
chmod 755 "$W"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "tcp-bench: nothing listens on port $1" >&2; exit 1
}

# ---- backends: two nginx, a small page and a big file ----
mkdir -p "$W/www"
printf 'hello from the backend\n' > "$W/www/index.html"
truncate -s "${BULK_MIB}M" "$W/www/big"
B1=$(free_port); B2=$(free_port)
for port in "$B1" "$B2"; do
    mkdir -p "$W/ngx$port"
    cat > "$W/ngx$port/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $W/ngx$port/nginx.pid;
error_log $W/ngx$port/error.log;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $W/ngx$port;
    proxy_temp_path $W/ngx$port;
    fastcgi_temp_path $W/ngx$port;
    uwsgi_temp_path $W/ngx$port;
    scgi_temp_path $W/ngx$port;
    server { listen 127.0.0.1:$port; root $W/www; }
}
CONF
    nginx -p "$W/ngx$port" -c "$W/ngx$port/nginx.conf" -e "$W/ngx$port/error.log" &
    PIDS+=($!)
    wait_port "$port"
done

# ---- proxies ----
declare -A PORT PID
start() { # name port command...
    local name=$1 port=$2; shift 2
    "$@" > "$W/$name.log" 2>&1 &
    PID[$name]=$!
    PIDS+=($!)
    PORT[$name]=$port
    wait_port "$port"
}

P=$(free_port)
start pen "$P" pen -f -r -x $((IDLE * 2 + 100)) "127.0.0.1:$P" "127.0.0.1:$B1" "127.0.0.1:$B2"

P=$(free_port)
cat > "$W/haproxy.cfg" <<CONF
global
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen lb
    bind 127.0.0.1:$P
    balance roundrobin
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
CONF
start haproxy "$P" haproxy -db -f "$W/haproxy.cfg"

P=$(free_port)
mkdir -p "$W/stream"
cat > "$W/stream/nginx.conf" <<CONF
load_module $STREAM_MODULE;
worker_processes auto;
daemon off;
pid $W/stream/nginx.pid;
error_log $W/stream/error.log;
events { worker_connections 8192; }
stream {
    upstream backends { server 127.0.0.1:$B1; server 127.0.0.1:$B2; }
    server { listen 127.0.0.1:$P; proxy_pass backends; }
}
CONF
start nginx-stream "$P" nginx -p "$W/stream" -c "$W/stream/nginx.conf" -e "$W/stream/error.log"

P=$(free_port)
start lb-pen "$P" "$LB_PEN" -r -x $((IDLE * 2 + 100)) "127.0.0.1:$P" "127.0.0.1:$B1" "127.0.0.1:$B2"
P=$(free_port)
start lb-pen-1t "$P" "$LB_PEN" --threads 1 -r -x $((IDLE * 2 + 100)) "127.0.0.1:$P" "127.0.0.1:$B1" "127.0.0.1:$B2"
P=$(free_port)
start lb-pen-copy "$P" "$LB_PEN" --no-splice -r -x $((IDLE * 2 + 100)) "127.0.0.1:$P" "127.0.0.1:$B1" "127.0.0.1:$B2"
PORT[direct]=$B1

NAMES=(direct pen haproxy nginx-stream lb-pen lb-pen-1t lb-pen-copy)

# ---- measurements ----
reqs() { # port [extra wrk args]
    local port=$1; shift
    wrk -t2 -c"$CONNS" -d"${DURATION}s" "$@" "http://127.0.0.1:$port/index.html" 2>/dev/null \
        | awk '/Requests\/sec/ {printf "%.0f", $2}'
}
bulk() { # port -> MB/s (MiB/s) for 4 parallel downloads
    local port=$1 start end curls=()
    start=$(date +%s.%N)
    for _ in 1 2 3 4; do
        curl -s -o /dev/null "http://127.0.0.1:$port/big" &
        curls+=($!)
    done
    for c in "${curls[@]}"; do wait "$c" || true; done
    end=$(date +%s.%N)
    python3 -c "print(f'{4*$BULK_MIB/($end-$start):.0f}')"
}
tree_pids() { # pid and its descendants
    local pid=$1
    echo "$pid"
    for c in $(pgrep -P "$pid" 2>/dev/null); do tree_pids "$c"; done
}
peak_rss() { # name -> MiB: VmHWM summed over the proxy's processes with $IDLE idle connections
    local name=$1 port=${PORT[$1]}
    python3 - "$port" "$IDLE" > "$W/idle.$name" <<'PY' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    socks.append(s)
# One request on each so the proxied backend connection is surely established.
for s in socks:
    s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
for s in socks:
    s.recv(4096)
print("ready", flush=True)
time.sleep(3)
PY
    local holder=$!
    for _ in $(seq 1 200); do grep -q ready "$W/idle.$name" 2>/dev/null && break; sleep 0.1; done
    local rss=0 hwm=0
    for p in $(tree_pids "${PID[$name]}"); do
        local kb
        kb=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        rss=$((rss + ${kb:-0}))
        kb=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        hwm=$((hwm + ${kb:-0}))
    done
    wait "$holder" 2>/dev/null || true
    python3 -c "print(f'{$rss/1024:.1f}')"
    python3 -c "print(f'{$hwm/1024:.1f}')" > "$W/hwm.$name"
}

declare -A KA NC BULK RSS HWM
best() { # current new -> the larger (an empty current loses)
    if [ -z "$1" ] || [ "$2" -gt "$1" ]; then echo "$2"; else echo "$1"; fi
}
for round in $(seq 1 "$ROUNDS"); do
    for name in "${NAMES[@]}"; do
        port=${PORT[$name]}
        echo "round $round/$ROUNDS: measuring $name (port $port)..." >&2
        KA[$name]=$(best "${KA[$name]:-}" "$(reqs "$port")")
        NC[$name]=$(best "${NC[$name]:-}" "$(reqs "$port" -H "Connection: close")")
        BULK[$name]=$(best "${BULK[$name]:-}" "$(bulk "$port")")
    done
done
for name in "${NAMES[@]}"; do
    if [ "$name" = direct ]; then RSS[$name]=-; HWM[$name]=-; else
        RSS[$name]=$(peak_rss "$name"); HWM[$name]=$(cat "$W/hwm.$name"); fi
done

ratio() { python3 -c "a,b='$1','$2'; print('-' if '-' in (a,b) or float(b)==0 else f'{float(a)/float(b):.2f}x')"; }

echo
echo "tcp-bench: $(nproc) cores, wrk -t2 -c$CONNS -d${DURATION}s, best of $ROUNDS rounds, 4 x ${BULK_MIB} MiB, $IDLE idle connections, $(date -u '+%Y-%m-%d %H:%M UTC')"
printf '| %-13s | %14s | %14s | %10s | %15s | %13s |\n' proxy "keep-alive r/s" "new-conn r/s" "bulk MB/s" "RSS MiB @$IDLE idle" "peak RSS MiB"
printf '|%s|%s|%s|%s|%s|%s|\n' :-------------- ---------------: ---------------: ----------: ----------------: --------------:
for name in "${NAMES[@]}"; do
    printf '| %-13s | %14s | %14s | %10s | %15s | %13s |\n' "$name" "${KA[$name]}" "${NC[$name]}" "${BULK[$name]}" "${RSS[$name]}" "${HWM[$name]}"
done
echo
printf '| %-22s | %14s | %14s | %10s | %13s |\n' ratio "keep-alive" "new-conn" "bulk" "RSS @idle"
printf '|%s|%s|%s|%s|%s|\n' :---------------------- ---------------: ---------------: ----------: --------------:
for name in lb-pen lb-pen-1t lb-pen-copy; do
    for base in pen haproxy direct; do
        rss=$( [ "$base" = direct ] && echo - || ratio "${RSS[$name]}" "${RSS[$base]}" )
        printf '| %-22s | %14s | %14s | %10s | %13s |\n' "$name / $base" \
            "$(ratio "${KA[$name]}" "${KA[$base]}")" "$(ratio "${NC[$name]}" "${NC[$base]}")" \
            "$(ratio "${BULK[$name]}" "${BULK[$base]}")" "$rss"
    done
done
