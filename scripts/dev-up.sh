#!/usr/bin/env bash
# The fleet on this machine with the sandbox defaults: installs what is missing, builds, starts a
# private RabbitMQ (ports 25682-25685, state in .payfleet/dev/broker) and every Payfleet process
# that is built, each restarted by a small supervisor if it crashes, and returns once all are ready.
#   scripts/dev-up.sh          start (idempotent)
#   scripts/dev-down.sh        stop everything
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
STATE="${PAYFLEET_DEV_DIR:-$ROOT/.payfleet/dev}"
export PAYFLEET_CONFIG="${PAYFLEET_CONFIG:-$ROOT/config/payfleet.yaml}"
export PAYFLEET_BROKER_AMQP_PORT=25682 PAYFLEET_BROKER_MGMT_PORT=25683 PAYFLEET_BROKER_DIST_PORT=25684 PAYFLEET_BROKER_EPMD_PORT=25685
mkdir -p "$STATE/logs" "$STATE/run"

PAYFLEET_SKIP_BEANCOUNT=1 scripts/install-deps.sh
echo "dev-up: building (the first build takes a few minutes)" >&2
swift build >/dev/null
BIN="$(swift build --show-bin-path)"
scripts/broker.sh start "$STATE/broker" >/dev/null
"$BIN/payfleet" topology declare --config "$PAYFLEET_CONFIG" >/dev/null

# name:admin-port (the ports config/payfleet.yaml gives each process)
PROCESSES=("payfleet-demo-worker:9190")
for p in ingest:8080 crm-sync:9101 ledger-writer:9111 receipt-sender:9121 settlement-aggregator:9131; do
    [ -x "$BIN/${p%%:*}" ] && PROCESSES+=("$p")
done

start_supervised() {
    local name="$1"
    local pidfile="$STATE/run/$name.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then return; fi
    # The supervisor restarts the process when it exits unexpectedly (not after SIGTERM).
    nohup setsid bash -c '
        trap "kill -TERM \$child 2>/dev/null; wait \$child; exit 0" TERM INT
        while true; do
            "$0" --config "$1" & child=$!
            echo $child > "$2.child"
            wait $child; rc=$?
            [ $rc -eq 0 ] && exit 0
            echo "supervisor: $0 exited with $rc, restarting in 1 s" >&2
            sleep 1
        done' "$BIN/$name" "$PAYFLEET_CONFIG" "$pidfile" </dev/null >>"$STATE/logs/$name.log" 2>&1 &
    echo $! > "$pidfile"
}

for p in "${PROCESSES[@]}"; do start_supervised "${p%%:*}"; done
for p in "${PROCESSES[@]}"; do
    name="${p%%:*}"; port="${p##*:}"
    for _ in $(seq 1 300); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 || { echo "dev-up: $name is not ready; see $STATE/logs/$name.log" >&2; exit 1; }
done

cat <<INFO
Payfleet is running (sandbox).
  config          $PAYFLEET_CONFIG
  state           $STATE
  amqp_url        amqp://guest:guest@127.0.0.1:25682/
  management_url  http://127.0.0.1:25683/  (guest / guest)
INFO
for p in "${PROCESSES[@]}"; do
    printf '  %-22s http://127.0.0.1:%s/readyz  pid %s  log %s\n' "${p%%:*}" "${p##*:}" \
        "$(cat "$STATE/run/${p%%:*}.pid.child" 2>/dev/null || echo '?')" "$STATE/logs/${p%%:*}.log"
done
echo "Stop with scripts/dev-down.sh"
