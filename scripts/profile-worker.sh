#!/usr/bin/env bash
# Where one worker's time goes under load: runs `payfleet-bench worker W` (release) and, once W's
# own process runs (after the demo worker's drain), samples it with `perf record -g` for SECONDS,
# then prints perf's report by symbol. perf is started from this shell, not from the bench:
# a child of the Swift process inherits its blocked SIGINT and never finalizes its file.
#   scripts/profile-worker.sh WORKER [COUNT] [SECONDS] [OUTDIR]     (root; Debian's linux-perf)
set -euo pipefail
cd "$(dirname "$0")/.."
w="${1:?worker: crm-sync, ledger-writer, receipt-sender or settlement-aggregator}"
count="${2:-20000}"; secs="${3:-3}"; out="${4:-/tmp/payfleet-profile}"
mkdir -p "$out"
bin="$PWD/.build/release"
PAYFLEET_BIN_DIR="$bin" "$bin/payfleet-bench" worker "$w" --count "$count" > "$out/$w.bench.txt" 2>&1 &
bench=$!
pid=""
for _ in $(seq 1 3000); do
    pid="$(pgrep -f "^$bin/$w --config" || true)"
    [ -n "$pid" ] && break
    sleep 0.1
done
[ -n "$pid" ] || { echo "no $w process appeared" >&2; kill "$bench" 2>/dev/null; exit 1; }
timeout -s INT "$secs" perf record ${PERF_CALL_GRAPH:--g} -F 999 -o "$out/$w.perf.data" -p "$pid" >/dev/null 2>&1 || true
wait "$bench" || true
grep -v -e ' info ' -e ' warning ' "$out/$w.bench.txt" | tail -3
perf report -i "$out/$w.perf.data" --stdio --no-children --percent-limit 1 --sort dso,symbol -g none 2>/dev/null \
    | grep -v -e '^#' -e '^$' | tee "$out/$w.report.txt" | head -40
