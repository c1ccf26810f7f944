#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on one machine, each node a "host" of its own: a network namespace
# with its own address on a private bridge, its own epmd, cookie copy, mnesia and logs. Worker
# hosts are namespaces on the same bridge. Needs root (ip netns); nothing leaves the bridge.
#
#   scripts/cluster.sh up [DIR]           three nodes clustered (pause_minority), wait until all run
#   scripts/cluster.sh down [DIR]         stop the nodes, delete namespaces and the bridge
#   scripts/cluster.sh env [DIR]          print PAYFLEET_CLUSTER_HOSTS / _URL / _MANAGEMENT_URL
#   scripts/cluster.sh kill N [DIR]       kill -9 node N (1..3): a crashed broker host
#   scripts/cluster.sh start N [DIR]      start node N again (it rejoins the cluster)
#   scripts/cluster.sh cut N [DIR]        take node N's link down: a network partition
#   scripts/cluster.sh heal N [DIR]       bring the link back
#   scripts/cluster.sh host NAME [DIR]    a worker host namespace (pfc-NAME), prints its address
#   scripts/cluster.sh exec NAME CMD...   run CMD inside namespace pfc-NAME
#   scripts/cluster.sh ctl N ARGS...      rabbitmqctl against node N
#   scripts/cluster.sh leader QUEUE [DIR] the node (1..3) that leads quorum queue QUEUE
#
# Addresses: bridge pfc-br0 10.77.0.254/24 in the caller's namespace; node N 10.77.0.N, AMQP
# 5672, management 15672, distribution 25672, epmd 4369 (each namespace has its own ports);
# worker hosts 10.77.0.11+. Nodes are named rabbit@10.77.0.N (long names).
set -euo pipefail

cmd="${1:-}"; shift || true
case "$cmd" in kill|start|cut|heal|host|exec|ctl|leader) arg="${1:-}"; shift || true ;; esac
if [ "$cmd" = exec ] || [ "$cmd" = ctl ]; then DIR="${PAYFLEET_CLUSTER_DIR:-${TMPDIR:-/tmp}/payfleet-cluster}"
else DIR="${1:-${PAYFLEET_CLUSTER_DIR:-${TMPDIR:-/tmp}/payfleet-cluster}}"; fi
RMQ_BIN=/usr/lib/rabbitmq/bin
NET=10.77.0
BR=pfc-br0

die() { echo "cluster.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"

ns_up() {  # ns_up NAME ADDR
    local ns="pfc-$1" addr="$2" veth="pfcv-$1"
    ip netns list | grep -qw "$ns" || ip netns add "$ns"
    # Decide on the namespace's side: a host-side veth can outlive a namespace deleted a moment
    # ago (the kernel tears it down asynchronously); keeping it would leave the new namespace
    # without eth0 and with lo down, and its node could never start.
    if ! ip netns exec "$ns" ip link show eth0 >/dev/null 2>&1; then
        ip link delete "$veth" 2>/dev/null || true
        gone_link "$veth"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BR" up
        ip netns exec "$ns" ip addr add "$addr/24" dev eth0
        ip netns exec "$ns" ip link set eth0 up
        ip netns exec "$ns" ip link set lo up
    fi
}

gone_link() {  # gone_link NAME: wait (at most 10 s) until the link no longer exists
    local end=$((SECONDS + 10))
    while ip link show "$1" >/dev/null 2>&1 && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
}

bridge_up() {
    if ! ip link show "$BR" >/dev/null 2>&1; then
        ip link add "$BR" type bridge
        ip addr add "$NET.254/24" dev "$BR"
        ip link set "$BR" up
    fi
}

node_env() {  # node_env N
    local n="$1"
    export HOME="$DIR/n$n" ERL_CRASH_DUMP="$DIR/n$n/erl_crash.dump"
    export RABBITMQ_USE_LONGNAME=true RABBITMQ_NODENAME="rabbit@$NET.$n" RABBITMQ_NODE_IP_ADDRESS="$NET.$n"
    export RABBITMQ_NODE_PORT=5672 RABBITMQ_DIST_PORT=25672 ERL_EPMD_ADDRESS="$NET.$n,127.0.0.1"
    export RABBITMQ_MNESIA_BASE="$DIR/n$n/mnesia" RABBITMQ_LOG_BASE="$DIR/n$n/log"
    export RABBITMQ_PID_FILE="$DIR/n$n/rabbitmq.pid"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/n$n/enabled_plugins"
    export RABBITMQ_CONFIG_FILE="$DIR/n$n/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/n$n/advanced.config"
    export RABBITMQ_CONF_ENV_FILE="$DIR/n$n/rabbitmq-env.conf"
}

ctl() {  # ctl N ARGS...
    local n="$1"; shift
    ( node_env "$n"; ip netns exec "pfc-n$n" "$RMQ_BIN/rabbitmqctl" --longnames -n "rabbit@$NET.$n" "$@" )
}

# At most 1 s per probe: a connect to an address nobody answers ARP for takes ~3 s to fail.
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

start_node() {  # start_node N
    local n="$1"
    mkdir -p "$DIR/n$n/mnesia" "$DIR/n$n/log"
    cp "$DIR/cookie" "$DIR/n$n/.erlang.cookie"; chmod 400 "$DIR/n$n/.erlang.cookie"
    echo '[rabbitmq_management,rabbitmq_consistent_hash_exchange].' > "$DIR/n$n/enabled_plugins"
    cat > "$DIR/n$n/rabbitmq.conf" <<CONF
listeners.tcp.default = $NET.$n:5672
management.tcp.port = 15672
management.tcp.ip = $NET.$n
loopback_users = none
log.console = false
log.file.level = warning
cluster_partition_handling = pause_minority
cluster_formation.peer_discovery_backend = classic_config
cluster_formation.classic_config.nodes.1 = rabbit@$NET.1
cluster_formation.classic_config.nodes.2 = rabbit@$NET.2
cluster_formation.classic_config.nodes.3 = rabbit@$NET.3
CONF
    echo '[].' > "$DIR/n$n/advanced.config"
    : > "$DIR/n$n/rabbitmq-env.conf"
    (
        node_env "$n"
        for fd in $(ls /proc/$BASHPID/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null || true; done
        nohup setsid ip netns exec "pfc-n$n" "$RMQ_BIN/rabbitmq-server" < /dev/null > "$DIR/n$n/log/stdout.log" 2>&1 &
        echo $! > "$DIR/n$n/server.pid"
    )
}

wait_node() {  # wait_node N: AMQP and management answer
    local n="$1"
    local end=$((SECONDS + 180))
    while [ "$SECONDS" -lt "$end" ]; do
        if port_open "$NET.$n" 5672 && port_open "$NET.$n" 15672; then return 0; fi
        sleep 0.2
    done
    tail -20 "$DIR/n$n/log/stdout.log" >&2 || true
    die "node $n did not answer within 180 s (logs in $DIR/n$n/log)"
}

node_pids() {  # the node's Erlang VM and epmd in its namespace
    local n="$1"
    { pgrep -f "beam.smp.* -home $DIR/n$n( |$)" || true
      [ -f "$DIR/n$n/server.pid" ] && cat "$DIR/n$n/server.pid"
      ip netns pids "pfc-n$n" 2>/dev/null || true
    } | sort -u | while read -r p; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"; done
    return 0
}

up() {
    command -v ip >/dev/null || die "iproute2 is missing"
    [ -x "$RMQ_BIN/rabbitmq-server" ] || die "rabbitmq-server is missing (scripts/install-deps.sh)"
    mkdir -p "$DIR"
    [ -f "$DIR/cookie" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/cookie"
    bridge_up
    for n in 1 2 3; do ns_up "n$n" "$NET.$n"; done
    for n in 1 2 3; do start_node "$n"; done
    for n in 1 2 3; do wait_node "$n"; done
    # Classic peer discovery forms the cluster as the nodes boot; make sure all three run.
    local end=$((SECONDS + 150))
    while [ "$SECONDS" -lt "$end" ]; do
        running="$(PAYFLEET_CLUSTER_DIR="$DIR" timeout 20 "$0" ctl 1 eval 'length(rabbit_nodes:all_running()).' 2>/dev/null || echo 0)"
        [ "$running" = 3 ] && break
        sleep 0.5
    done
    [ "$running" = 3 ] || die "the cluster has $running running nodes, not 3 (logs in $DIR/n*/log)"
    ctl 1 add_user payfleet payfleet >/dev/null 2>&1 || true
    ctl 1 set_permissions -p / payfleet '.*' '.*' '.*' >/dev/null
    ctl 1 set_user_tags payfleet administrator >/dev/null
    print_env
}

kill_node() {
    local pids; pids="$(node_pids "$1")"
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
    for _ in $(seq 1 50); do port_open "$NET.$1" 5672 || break; sleep 0.1; done
    rm -f "$DIR/n$1/rabbitmq.pid" "$DIR/n$1/server.pid"
}

down() {
    for n in 1 2 3; do kill_node "$n" 2>/dev/null || true; done
    for ns in $(ip netns list | awk '{print $1}' | grep '^pfc-' || true); do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
        ip netns delete "$ns" || true
    done
    for n in 1 2 3; do ip link delete "pfcv-n$n" 2>/dev/null || true; gone_link "pfcv-n$n"; done
    ip link delete "$BR" 2>/dev/null || true
    gone_link "$BR"
    rm -rf "$DIR"
}

print_env() {
    echo "PAYFLEET_CLUSTER_HOSTS=$NET.1:5672,$NET.2:5672,$NET.3:5672"
    echo "PAYFLEET_CLUSTER_URL=amqp://payfleet:payfleet@$NET.1:5672/"
    echo "PAYFLEET_CLUSTER_MANAGEMENT_URL=http://payfleet:payfleet@$NET.1:15672/"
    echo "PAYFLEET_CLUSTER_DIR=$DIR"
}

case "$cmd" in
    up) up ;;
    down) down ;;
    env) print_env ;;
    kill) kill_node "$arg" ;;
    start) start_node "$arg"; wait_node "$arg" ;;
    cut) ip link set "pfcv-n$arg" down ;;
    heal) ip link set "pfcv-n$arg" up ;;
    host)
        bridge_up
        i=$(( 11 + $(printf '%s' "$arg" | cksum | cut -d' ' -f1) % 200 ))
        [ -f "$DIR/hosts/$arg" ] && i="$(cat "$DIR/hosts/$arg")"
        mkdir -p "$DIR/hosts"; echo "$i" > "$DIR/hosts/$arg"
        ns_up "$arg" "$NET.$i"; echo "$NET.$i" ;;
    exec) exec ip netns exec "pfc-$arg" "$@" ;;
    ctl) ctl "$arg" "$@" ;;
    leader)
        ctl 1 list_queues -q name leader 2>/dev/null | awk -v q="$arg" '$1 == q { print $2 }' | sed "s/rabbit@$NET\.//" ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
