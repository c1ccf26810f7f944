#!/usr/bin/env bash
# Fault injection on the whole fleet under simulated load (issue 10). One run:
#   - a private fleet on its own ports (broker 26682-26685, ingest 18080, admin 19101-19131),
#     state in .payfleet/chaos; receipts over real SMTP to an aiosmtpd sink on 127.0.0.1:18925
#   - `payfleet simulate --rate R --duration S` (signed Stripe/Adyen/billing/phone traffic with
#     duplicates and out-of-order deliveries), and meanwhile:
#       kill -9 each worker in turn (the dev supervisor restarts it),
#       restart the broker,
#       inject poison messages into payfleet.events,
#       take the SMTP server away for a while;
#   - at the end: simulate's own check across all four workers' states (ledger trial balance and
#     per-account changes, CRM lines, receipts at the SMTP server, settlement totals: nothing
#     lost, nothing doubled), every poison message in each worker's DLQ, and the counts.
# Usage: scripts/chaos.sh [rate=120] [duration=60]   (build first: swift build)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-120}"; DURATION="${2:-60}"; POISON=5
ROOT="$(pwd)"; BIN="$(swift build --show-bin-path)"; STATE="$ROOT/.payfleet/chaos"
export PAYFLEET_BROKER_AMQP_PORT=26682 PAYFLEET_BROKER_MGMT_PORT=26683 PAYFLEET_BROKER_DIST_PORT=26684 PAYFLEET_BROKER_EPMD_PORT=26685
log() { echo "chaos $(date +%T): $*"; }

[ -x "$BIN/payfleet" ] || { echo "chaos: build first (swift build)" >&2; exit 1; }
"$BIN/payfleet" dev down --state-dir "$STATE" >/dev/null 2>&1 || true
rm -rf "$STATE"; mkdir -p "$STATE/sink"

# The sandbox config on chaos ports; receipts over SMTP into the sink, whose .eml files are
# where simulate looks for receipts (mail_dir); short retry tiers so recovery fits the run.
python3 - "$ROOT/config/payfleet.yaml" "$STATE" > "$STATE/base.yaml" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1])); state = sys.argv[2]
cfg["broker"]["url"] = "amqp://guest:guest@127.0.0.1:26682/"
cfg["broker"]["management_url"] = "http://guest:guest@127.0.0.1:26683/"
cfg["ingest"]["port"] = 18080
for name, port in [("crm-sync", 19101), ("ledger-writer", 19111), ("receipt-sender", 19121), ("settlement-aggregator", 19131)]:
    s = cfg.setdefault(name, {}) or {}
    s["admin_port"] = port
    s["retry_delays"] = ["1s", "5s", "15s", "60s"]
    cfg[name] = s
r = cfg["receipt-sender"]
r.update({"email_transport": "smtp", "sms_transport": "none", "mail_dir": state + "/sink", "outcome_unknown": "resend",
          "smtp": {"host": "127.0.0.1", "port": 18925, "tls": "none", "connect_timeout": "2s", "timeout": "10s"}})
cfg.pop("demo-worker", None)
print(yaml.safe_dump(cfg, sort_keys=False))
PY

SINK_PID=""
start_sink() {
    rm -f "$STATE/sink.ready"
    python3 Tests/PayfleetReceiptsTests/smtp_sink.py --port 18925 --dir "$STATE/sink" --ready-file "$STATE/sink.ready" \
        >>"$STATE/sink.log" 2>&1 &
    SINK_PID=$!
    for _ in $(seq 1 100); do [ -f "$STATE/sink.ready" ] && break; sleep 0.1; done
}
cleanup() {
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
    "$BIN/payfleet" dev down --state-dir "$STATE" >/dev/null 2>&1 || true
}
trap cleanup EXIT
start_sink
log "starting the fleet (state $STATE)"
"$BIN/payfleet" dev up --state-dir "$STATE" --config "$STATE/base.yaml" > "$STATE/up.txt"
CFG="$STATE/payfleet.yaml"

log "simulate: $RATE events/s for $DURATION s"
"$BIN/payfleet" simulate --config "$CFG" --rate "$RATE" --duration "${DURATION}s" --seed 7 --settle-timeout 300s --json \
    > "$STATE/simulate.json" 2> "$STATE/simulate.err" &
SIM=$!

step=$(( DURATION / 10 > 2 ? DURATION / 10 : 2 ))
sleep "$step"
for w in crm-sync ledger-writer receipt-sender settlement-aggregator; do
    pid="$(cat "$STATE/run/$w.pid")"; kill -9 "$pid"; log "kill -9 $w (pid $pid)"; sleep "$step"
done
log "broker: stop"; scripts/broker.sh stop "$STATE/broker"
sleep 3
log "broker: start"; scripts/broker.sh start "$STATE/broker" >/dev/null
for i in $(seq 1 $POISON); do
    curl -fsS -u guest:guest -H 'content-type: application/json' \
        "http://127.0.0.1:26683/api/exchanges/%2F/payfleet.events/publish" \
        -d "{\"properties\":{\"delivery_mode\":2,\"message_id\":\"poison-$i\"},\"routing_key\":\"payment.succeeded\",\"payload\":\"{\\\"poison\\\": $i, not json\",\"payload_encoding\":\"string\"}" >/dev/null
done
log "injected $POISON poison messages (payment.succeeded, not JSON)"
kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true; log "SMTP server down"
sleep $(( step * 2 ))
start_sink; log "SMTP server back"

log "waiting for simulate to finish and the fleet to settle"
SIM_RC=0; wait "$SIM" || SIM_RC=$?
"$BIN/payfleet" status --json --config "$CFG" > "$STATE/status.json" 2>/dev/null || true
python3 - "$STATE" "$POISON" "$SIM_RC" <<'PY'
import json, sys, glob, email, collections
state, poison, sim_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    sim = json.load(open(state + "/simulate.json"))
except Exception:
    print("chaos: simulate printed no JSON:", open(state + "/simulate.err").read()[-2000:]); sys.exit(1)
status = json.load(open(state + "/status.json"))
print("sent:", json.dumps(sim["sent"], sort_keys=True)[:600])
for c in sim["checks"]:
    print(f"  {c['name']:<12} {c['status']:<12} {c['summary']}")
ids = collections.Counter()
for f in glob.glob(state + "/sink/*.eml"):
    ids[email.message_from_binary_file(open(f, "rb")).get("Message-ID")] += 1
dup = sum(n - 1 for n in ids.values() if n > 1)
print(f"  smtp sink    {len(ids)} distinct Message-IDs received, {dup} received again")
dlq = {}
for w in status.get("workers", []):
    dlq[w["name"]] = dlq.get(w["name"], 0) + w.get("dlq_depth", 0)
print("  DLQ depths  ", dlq)
ok = sim["agree"] and sim_rc == 0 and all(n == poison for n in dlq.values()) and len(dlq) == 4
if ok:
    print(f"CHAOS PASSED: {sim['result']}: 0 lost and 0 duplicated effects across the four workers' states; "
          f"{poison} poison messages in each DLQ")
else:
    print(f"CHAOS FAILED: {sim['result']} (simulate exit {sim_rc}); DLQ depths {dlq}, expected {poison} each")
sys.exit(0 if ok else 1)
PY
