#!/usr/bin/env bash
# Load benchmark of ingest (issue 3): signed Stripe webhooks/s and latency with the durable
# outbox, then the same server answering 202 without the outbox (the ceiling), and the ratio.
# Needs wrk (apt-get install wrk) and a broker (PAYFLEET_BROKER_URL, default the private one).
# Usage: scripts/bench-ingest.sh [duration=10s] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10s}"
CONNS="${2:-64}"
BIN=".build/release/ingest"; [ -x "$BIN" ] || BIN=".build/debug/ingest"
BROKER="${PAYFLEET_BROKER_URL:-amqp://guest:guest@127.0.0.1:${PAYFLEET_BROKER_AMQP_PORT:-25672}/}"
PORT="${INGEST_BENCH_PORT:-28080}"
WORK="$(mktemp -d /tmp/ingest-bench.XXXXXX)"
SECRET="whsec_bench_secret"
N="${INGEST_BENCH_EVENTS:-60000}"
python3 - "$WORK/events.tsv" "$SECRET" "$N" <<'PY'
import hashlib, hmac, json, sys, time
path, secret, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = int(time.time())
run = str(t)
with open(path, "w") as f:
    for i in range(n):
        body = json.dumps({"id": f"evt_bench_{run}_{i}", "object": "event", "type": "payout.paid", "created": t,
                           "data": {"object": {"id": f"po_bench_{i}", "object": "payout", "amount": 1000 + i,
                                               "currency": "gbp", "status": "paid", "metadata": {}}}},
                          separators=(",", ":"))
        sig = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
        f.write(f"t={t},v1={sig}\t{body}\n")
PY
run() {  # $1 = benchmark_no_outbox
    cat > "$WORK/p.yaml" <<YAML
log_level: warning
state_dir: $WORK/state-$1
broker:
  url: $BROKER
merchants:
  - id: m_bench
    stripe_account: acct_bench
ingest:
  port: $PORT
  benchmark_no_outbox: $1
  stripe:
    webhook_secrets: [$SECRET]
    default_merchant: m_bench
YAML
    "$BIN" --config "$WORK/p.yaml" > "$WORK/ingest-$1.log" 2>&1 &
    local pid=$!
    for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
    INGEST_BENCH_FILE="$WORK/events.tsv" INGEST_BENCH_THREADS=2 \
        wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s scripts/bench/ingest-stripe.lua "http://127.0.0.1:$PORT" > "$WORK/wrk-$1.txt"
    kill -TERM "$pid"; wait "$pid" || true
    local rps p50 p99 non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk-$1.txt")
    p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk-$1.txt")
    p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk-$1.txt")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$WORK/wrk-$1.txt")
    echo "$rps $p50 $p99 ${non2xx:-0}"
}
read -r D_RPS D_P50 D_P99 D_ERR < <(run false)
read -r C_RPS C_P50 C_P99 C_ERR < <(run true)
echo "binary: $BIN; $DURATION, $CONNS connections, 2 wrk threads, signed Stripe payout.paid webhooks"
printf "durable outbox : %10s req/s  p50 %8s  p99 %8s  non-2xx %s\n" "$D_RPS" "$D_P50" "$D_P99" "$D_ERR"
printf "immediate 202  : %10s req/s  p50 %8s  p99 %8s  non-2xx %s\n" "$C_RPS" "$C_P50" "$C_P99" "$C_ERR"
python3 -c "print(f'ratio durable/ceiling: {float(\"$D_RPS\")/float(\"$C_RPS\"):.2f}')"
echo "details: $WORK"
