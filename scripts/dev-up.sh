#!/usr/bin/env bash
# The fleet on this machine with the sandbox defaults, in one command: installs what is missing,
# builds, and runs `payfleet dev up` (a private RabbitMQ on 25682-25685 and every process under a
# supervisor, state in .payfleet/dev), which returns once all are ready and prints the URLs,
# ports and sandbox secrets. Extra arguments go to `payfleet dev up` (e.g. --json).
#   scripts/dev-up.sh            start (idempotent)
#   scripts/dev-down.sh          stop everything
set -euo pipefail
cd "$(dirname "$0")/.."
PAYFLEET_SKIP_BEANCOUNT=1 scripts/install-deps.sh
echo "dev-up: building (the first build takes a few minutes)" >&2
swift build >/dev/null
BIN="$(swift build --show-bin-path)"
"$BIN/payfleet" dev up "$@"
if [ -z "${PAYFLEET_DEV_NO_SIMULATE:-}" ] && [[ " $* " != *" --json "* ]]; then
    # A short simulated run proves the whole path: signed webhooks in, every worker's state out.
    state=".payfleet/dev"
    for ((i = 1; i <= $#; i++)); do [ "${!i}" = "--state-dir" ] && { j=$((i + 1)); state="${!j}"; }; done
    "$BIN/payfleet" simulate --count 300 --config "$state/payfleet.yaml"
fi
