#!/usr/bin/env bash
# Stops what scripts/dev-up.sh started: every process gracefully (SIGTERM), then the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${PAYFLEET_DEV_DIR:-$(pwd)/.payfleet/dev}"
export PAYFLEET_BROKER_AMQP_PORT=25682 PAYFLEET_BROKER_MGMT_PORT=25683 PAYFLEET_BROKER_DIST_PORT=25684 PAYFLEET_BROKER_EPMD_PORT=25685
for pidfile in "$STATE"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidfile" "$pidfile.child"
done
scripts/broker.sh stop "$STATE/broker"
echo "Payfleet stopped."
