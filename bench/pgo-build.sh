#!/usr/bin/env bash
# Builds lb-balancer with profile-guided optimisation (PGO): an instrumented build serves a
# training load, the profile it writes tells the compiler which paths are hot, and a second
# build lays the code out and inlines for them. On this project's request path that takes
# about a fifth off the instructions per request (BENCHMARKS.md).
#
# The training load is generic, not the benchmark's: curl (not wrk) through lb-balancer to two
# nginx backends, with kept-alive and new connections, route cookies, URL routes, uploads,
# HTTP/2 (prior knowledge), bad requests, 404s and a member that refuses connections, so
# that the error paths are not laid out as if they never ran.
#
# The profile format follows LLVM's: llvm-profdata must be of the same major version as the
# LLVM that rustc uses (`rustc -vV`). On Debian, the package llvm-N has it in
# /usr/lib/llvm-N/bin. Without it, the script says which package it needs and exits 3.
#
# Usage: bench/pgo-build.sh
# Prints the path of the optimised binary (target/pgo/release/lb-balancer) on stdout.
# Needs: cargo, curl, nginx, llvm-profdata (as above).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/lb-pgo.XXXXXX)
PIDS=()
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
trap stop_started EXIT INT TERM

llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$llvm" ] || { echo "pgo-build: cannot tell rustc's LLVM version from 'rustc -vV'" >&2; exit 3; }
PROFDATA=
for c in "llvm-profdata-$llvm" "/usr/lib/llvm-$llvm/bin/llvm-profdata" llvm-profdata; do
    command -v "$c" >/dev/null || continue
    if "$c" --version 2>/dev/null | grep -Eq "LLVM version $llvm\."; then
        PROFDATA=$c
        break
    fi
done
if [ -z "$PROFDATA" ]; then
    echo "pgo-build: no llvm-profdata of LLVM $llvm, the version rustc uses (Debian: apt-get install llvm-$llvm)" >&2
    exit 3
fi
for tool in curl nginx; do
    command -v "$tool" >/dev/null || { echo "pgo-build: missing $tool" >&2; exit 1; }
done

GEN="$ROOT/target/pgo-gen"
OUT="$ROOT/target/pgo"
RAW="$WORK/raw"
echo "pgo-build: instrumented build (LLVM $llvm, $PROFDATA)..." >&2
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$RAW" CARGO_TARGET_DIR="$GEN" \
    cargo build --release -q -p lb-examples --bin lb-balancer)

BE1=19201 BE2=19202 DEAD=19203 PORT=19210
start_backends $BE1 $BE2
# wait_for_lb WHAT LOG: until the lb-balancer on PORT answers (10 s), else says WHAT did not
# and shows its LOG.
wait_for_lb() {
    for _ in $(seq 1 100); do
        curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && return 0
        sleep 0.1
    done
    echo "pgo-build: $1 did not answer" >&2
    cat "$2" >&2
    exit 1
}

echo "pgo-build: training..." >&2
"$GEN/release/lb-balancer" --listen 127.0.0.1:$PORT --stickysession ROUTEID \
    --member http://127.0.0.1:$BE1,route=b1 --member http://127.0.0.1:$BE2,route=b2 \
    --member http://127.0.0.1:$DEAD,route=b3 >"$WORK/lb.log" 2>&1 &
LBPID=$!
PIDS+=($LBPID)
wait_for_lb "lb-balancer" "$WORK/lb.log"

URL=http://127.0.0.1:$PORT
head -c 65536 /dev/zero | tr '\0' x >"$WORK/body"
# Four clients at once, each on one kept-alive connection; then the other shapes.
train() {
    local clients=()
    curl -s -o /dev/null "$URL/a/b?id=[1-4000]" &
    clients+=($!)
    curl -s -o /dev/null -H "Cookie: ROUTEID=s.b1; other=1" "$URL/app/page?[1-3000]" &
    clients+=($!)
    curl -s -o /dev/null -A "Mozilla/5.0" -H "Accept: text/html" -H "Accept-Language: en" \
        -H "X-Forwarded-For: 192.0.2.1" "$URL/static/x.css?v=[1-3000]" &
    clients+=($!)
    curl -s -o /dev/null "$URL/q?ROUTEID=b2&n=[1-2000]" &
    clients+=($!)
    wait "${clients[@]}"
    curl -s -o /dev/null -H "Connection: close" "$URL/close?[1-1000]"
    curl -s -o /dev/null -X POST --data-binary @"$WORK/body" "$URL/upload?[1-200]"
    curl -s -o /dev/null -X PUT -H "Transfer-Encoding: chunked" --data-binary @"$WORK/body" "$URL/put?[1-100]"
    curl -s -o /dev/null -I "$URL/head?[1-500]"
    for i in $(seq 1 100); do
        curl -s -o /dev/null --http2-prior-knowledge "$URL/h2/$i" || true
    done
    # Refused with 400: never forwarded.
    for i in $(seq 1 50); do
        printf 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n' | curl -s -m 2 -o /dev/null telnet://127.0.0.1:$PORT || true
    done
}
train
# The instrumented binary writes its profile as it exits: 30 s for that, else it failed.
kill -INT $LBPID
for _ in $(seq 1 300); do kill -0 $LBPID 2>/dev/null || break; sleep 0.1; done
if kill -0 $LBPID 2>/dev/null; then
    kill -KILL $LBPID
    echo "pgo-build: the instrumented build did not exit within 30 s of SIGINT" >&2
    exit 1
fi
wait $LBPID || true
ls "$RAW"/*.profraw >/dev/null 2>&1 || { echo "pgo-build: the instrumented build wrote no profile" >&2; exit 1; }
"$PROFDATA" merge -o "$WORK/lb.profdata" "$RAW"

echo "pgo-build: optimised build..." >&2
# Functions the training never ran have no profile: rustc warns for each, which says nothing
# here.
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$WORK/lb.profdata -Cllvm-args=-pgo-warn-missing-function=false" \
    CARGO_TARGET_DIR="$OUT" cargo build --release -q -p lb-examples --bin lb-balancer)

# The optimised binary must serve, and route: each member's route cookie reaches it.
"$OUT/release/lb-balancer" --listen 127.0.0.1:$PORT --stickysession ROUTEID \
    --member http://127.0.0.1:$BE1,route=b1 --member http://127.0.0.1:$BE2,route=b2 >"$WORK/lbpgo.log" 2>&1 &
PGOPID=$!
PIDS+=($PGOPID)
wait_for_lb "the optimised build" "$WORK/lbpgo.log"
for route in b1:$BE1 b2:$BE2 b1:$BE1; do
    got=$(curl -fs -H "Cookie: ROUTEID=x.${route%%:*}" "http://127.0.0.1:$PORT/which" || true)
    [ "$got" = "${route#*:}" ] || {
        echo "pgo-build: the optimised build sent route ${route%%:*} to '$got', not ${route#*:}" >&2
        cat "$WORK/lbpgo.log" >&2
        exit 1
    }
done
kill -INT $PGOPID
for _ in $(seq 1 50); do kill -0 $PGOPID 2>/dev/null || break; sleep 0.1; done
kill -KILL $PGOPID 2>/dev/null || true
wait $PGOPID || true
echo "$OUT/release/lb-balancer"
