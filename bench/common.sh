# Shared by bench/http-bench.sh, bench/instr-bench.sh and bench/pgo-build.sh (sourced, not
# run): the backends and what the peers add to do the same work as lb-balancer. Expects ROOT
# and WORK to be set and a PIDS array to which the processes started here are added.

# stop_started: kills and reaps every process in PIDS, then removes WORK (the scripts' exit
# trap).
stop_started() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}

# build_lb: builds lb-balancer (release) and sets LBBIN; then, unless LB_PGO=0, builds it with
# profile-guided optimisation too (bench/pgo-build.sh) and sets LBBIN_PGO, left empty when
# that cannot be done here (the reason is printed). The scripts measure both builds.
build_lb() {
    echo "building lb-balancer (release)..." >&2
    (cd "$ROOT" && cargo build --release -q -p lb-examples --bin lb-balancer)
    LBBIN="$ROOT/target/release/lb-balancer"
    LBBIN_PGO=
    if [ "${LB_PGO:-1}" != 0 ]; then
        local rc=0
        LBBIN_PGO=$("$ROOT/bench/pgo-build.sh") || rc=$?
        if [ $rc != 0 ]; then
            LBBIN_PGO=
            # 3: no llvm-profdata to match rustc (said above); anything else is a failure.
            [ $rc = 3 ] || { echo "bench/pgo-build.sh failed ($rc)" >&2; exit 1; }
            echo "measuring the plain release build only" >&2
        fi
    fi
}

# start_backends BE1 BE2: one nginx, two servers answering a 6-byte body (and /which with
# their port, for checks of where a request went).
start_backends() {
    mkdir -p "$WORK/ngb"
    cat >"$WORK/backends.conf" <<EOB
worker_processes 1;
pid $WORK/ngb/nginx.pid;
error_log $WORK/ngb/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$1; location / { return 200 "hello\n"; } location = /which { return 200 "\$server_port\n"; } }
    server { listen 127.0.0.1:$2; location / { return 200 "hello\n"; } location = /which { return 200 "\$server_port\n"; } }
}
EOB
    nginx -c "$WORK/backends.conf" -p "$WORK/ngb" -g 'daemon off;' &
    PIDS+=($!)
}

# What the peers add, when they do the same work as lb-balancer: X-Forwarded-For, -Proto,
# -Host and Via on requests, Via on responses.
HA_SAME_HEADERS='    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request add-header Via "1.1 haproxy"
    http-response add-header Via "1.1 haproxy"'
# shellcheck disable=SC2016 # nginx variables, not the shell's
NG_SAME_HEADERS='        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header Via "1.1 nginx";
        add_header Via "1.1 nginx";'
