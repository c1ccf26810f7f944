#!/usr/bin/env bash
# A private RabbitMQ broker for tests and local runs: its own node name, cookie, epmd, ports,
# mnesia and log directories under one state directory. Never touches a system-wide broker.
#
#   scripts/broker.sh start [DIR]   start (installs rabbitmq-server if missing), wait until it answers
#   scripts/broker.sh stop  [DIR]   stop cleanly
#   scripts/broker.sh env   [DIR]   print PAYFLEET_AMQP_URL / PAYFLEET_MANAGEMENT_URL for the broker
#   scripts/broker.sh ctl   [DIR] ARGS...   run rabbitmqctl against it
#
# Ports (override with env): PAYFLEET_BROKER_AMQP_PORT (default 25672), ..._MGMT_PORT (25673),
# ..._DIST_PORT (25674), ..._EPMD_PORT (25675).
set -euo pipefail

cmd="${1:-}"; shift || true
DIR="${1:-${PAYFLEET_BROKER_DIR:-${TMPDIR:-/tmp}/payfleet-broker}}"; [ $# -gt 0 ] && shift
AMQP_PORT="${PAYFLEET_BROKER_AMQP_PORT:-25672}"
MGMT_PORT="${PAYFLEET_BROKER_MGMT_PORT:-25673}"
DIST_PORT="${PAYFLEET_BROKER_DIST_PORT:-25674}"
EPMD_PORT="${PAYFLEET_BROKER_EPMD_PORT:-25675}"
TLS_PORT="${PAYFLEET_BROKER_TLS_PORT:-$((AMQP_PORT + 6))}"
NODE="payfleet-${AMQP_PORT}@localhost"
RMQ_BIN=/usr/lib/rabbitmq/bin

die() { echo "broker.sh: $*" >&2; exit 1; }

install_if_missing() {
    if [ ! -x "$RMQ_BIN/rabbitmq-server" ]; then
        echo "broker.sh: installing rabbitmq-server" >&2
        local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rabbitmq-server >/dev/null
    fi
}

broker_env() {
    export HOME="$DIR"
    export ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_NODENAME="$NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$AMQP_PORT" RABBITMQ_DIST_PORT="$DIST_PORT"
    export RABBITMQ_MNESIA_BASE="$DIR/mnesia" RABBITMQ_LOG_BASE="$DIR/log"
    export RABBITMQ_PID_FILE="$DIR/rabbitmq.pid"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
    export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config"
    export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"
    # Erlang's schedulers spin for work before they sleep (busy-wait). On a host whose few cores
    # the broker shares with the workers that spinning is CPU taken from them; RabbitMQ's
    # runtime guide recommends turning it off there. PAYFLEET_BROKER_ERL_ARGS overrides.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${PAYFLEET_BROKER_ERL_ARGS-+sbwt none +sbwtdcpu none +sbwtdio none}"
}

# A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate, so
# amqps:// (TLS with CA and client certificate) is tested against a real listener.
make_tls_material() {
    [ -f "$DIR/tls/client.pem" ] && return 0
    command -v openssl >/dev/null || return 0
    mkdir -p "$DIR/tls"
    (
        cd "$DIR/tls"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 -subj "/CN=payfleet-test-ca" 2>/dev/null
        for who in server client; do
            openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj "/CN=$who" 2>/dev/null
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > $who.ext
            openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 30 -extfile $who.ext 2>/dev/null
        done
        chmod 644 ./*.key
    )
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
    install_if_missing
    mkdir -p "$DIR/mnesia" "$DIR/log"
    if [ -n "$(broker_pids)" ] && port_open "$AMQP_PORT"; then
        echo "broker.sh: already running on $AMQP_PORT" >&2; print_env; return 0
    fi
    port_open "$AMQP_PORT" && die "port $AMQP_PORT is taken by another process"
    [ -f "$DIR/.erlang.cookie" ] || { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/.erlang.cookie"; }
    chmod 400 "$DIR/.erlang.cookie"
    echo '[rabbitmq_management,rabbitmq_consistent_hash_exchange].' > "$DIR/enabled_plugins"
    make_tls_material
    cat > "$DIR/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.port = $MGMT_PORT
management.tcp.ip = 127.0.0.1
loopback_users = none
log.console = false
log.file.level = warning
listeners.ssl.default = 127.0.0.1:$TLS_PORT
ssl_options.cacertfile = $DIR/tls/ca.pem
ssl_options.certfile = $DIR/tls/server.pem
ssl_options.keyfile = $DIR/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
CONF
    echo '[].' > "$DIR/advanced.config"
    : > "$DIR/rabbitmq-env.conf"
    broker_env
    # The server must not inherit the caller's descriptors (a test runner's pipes): a caller
    # waiting for this script to exit would otherwise wait for the broker too.
    for fd in $(ls /proc/$$/fd); do
        [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null || true
    done
    nohup setsid "$RMQ_BIN/rabbitmq-server" < /dev/null > "$DIR/log/stdout.log" 2>&1 &
    echo $! > "$DIR/server.pid"
    for _ in $(seq 1 600); do
        if port_open "$AMQP_PORT" && port_open "$MGMT_PORT"; then print_env; return 0; fi
        kill -0 "$(cat "$DIR/server.pid")" 2>/dev/null || { tail -20 "$DIR/log/stdout.log" >&2; die "rabbitmq-server exited during start-up (logs in $DIR/log)"; }
        sleep 0.2
    done
    die "broker did not open port $AMQP_PORT within 120 s (logs in $DIR/log)"
}

# The broker's own processes: the pid files, or (if a previous stop lost them) the Erlang VM
# started with this state directory as its home.
broker_pids() {
    {
        [ -f "$DIR/rabbitmq.pid" ] && { cat "$DIR/rabbitmq.pid"; echo; }
        [ -f "$DIR/server.pid" ] && { cat "$DIR/server.pid"; echo; }
        pgrep -f "beam.smp.* -home $DIR( |$)" || true
    } 2>/dev/null | sort -u | while read -r p; do
        if kill -0 "$p" 2>/dev/null; then echo "$p"; fi
    done
    return 0
}

stop() {
    broker_env
    local pids
    pids="$(broker_pids)"
    if [ -n "$pids" ]; then
        # A clean stop through the node itself (seconds); SIGTERM to the wrapper is slow to act.
        timeout 60 "$RMQ_BIN/rabbitmqctl" -n "$NODE" stop >/dev/null 2>&1 || true
        kill -TERM $pids 2>/dev/null || true
        # A loaded machine can take a while to shut a node down cleanly.
        for _ in $(seq 1 300); do
            alive=""
            # A zombie (exited, not yet reaped by a container's init) counts as stopped.
            for p in $pids; do
                if kill -0 "$p" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$p/stat" 2>/dev/null; then alive="$alive $p"; fi
            done
            [ -z "$alive" ] && break
            sleep 0.2
        done
        kill -KILL $pids 2>/dev/null || true
    fi
    for _ in $(seq 1 50); do port_open "$AMQP_PORT" || break; sleep 0.2; done
    for _ in $(seq 1 20); do
        epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
        port_open "$EPMD_PORT" || break
        sleep 0.2
    done
    rm -f "$DIR/rabbitmq.pid" "$DIR/server.pid"
}

print_env() {
    echo "PAYFLEET_AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
    echo "PAYFLEET_MANAGEMENT_URL=http://guest:guest@127.0.0.1:$MGMT_PORT/"
    echo "PAYFLEET_BROKER_DIR=$DIR"
    [ -f "$DIR/tls/ca.pem" ] && echo "PAYFLEET_TEST_AMQPS_URL=amqps://guest:guest@127.0.0.1:$TLS_PORT/?cacertfile=$DIR/tls/ca.pem&certfile=$DIR/tls/client.pem&keyfile=$DIR/tls/client.key"
    return 0
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    env) print_env ;;
    ctl) broker_env; exec "$RMQ_BIN/rabbitmqctl" -n "$NODE" "$@" ;;
    *) echo "usage: $0 start|stop|env|ctl [DIR] [args]" >&2; exit 2 ;;
esac
