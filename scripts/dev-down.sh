#!/usr/bin/env bash
# Stops what scripts/dev-up.sh started: every process gracefully (SIGTERM), then the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
"$(swift build --show-bin-path)/payfleet" dev down "$@"
