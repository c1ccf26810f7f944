#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: installs what is missing, starts a private
# RabbitMQ on non-default ports in a temp dir, runs `swift test` against it, stops the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PAYFLEET_BROKER_DIR="${PAYFLEET_BROKER_DIR:-$(mktemp -d /tmp/payfleet-test-broker.XXXXXX)}"
export PAYFLEET_BROKER_AMQP_PORT="${PAYFLEET_BROKER_AMQP_PORT:-25672}"
export PAYFLEET_BROKER_MGMT_PORT="${PAYFLEET_BROKER_MGMT_PORT:-25673}"
cleanup() { scripts/broker.sh stop "$PAYFLEET_BROKER_DIR" || true; }
trap cleanup EXIT
scripts/broker.sh start "$PAYFLEET_BROKER_DIR"
export PAYFLEET_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:${PAYFLEET_BROKER_AMQP_PORT}/"
export PAYFLEET_TEST_MANAGEMENT_URL="http://guest:guest@127.0.0.1:${PAYFLEET_BROKER_MGMT_PORT}/"
swift build --build-tests
# --no-parallel: integration suites share one broker and the payfleet.events exchange; run
# them one at a time so one suite's published events never reach another's queues.
# The log is kept and, on a failure, the failing tests and their issues are printed again at
# the end, so the last lines of a CI log name what failed.
log="$PAYFLEET_BROKER_DIR/swift-test.log"
set +e
swift test --skip-build --no-parallel "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  echo "---- failures (from $log) ----"
  grep -E '^✘|Fatal error|error: ' "$log" | grep -v ' info ' | cut -c1-400 | head -80
  echo "---- swift test exited $rc ----"
fi
exit "$rc"
