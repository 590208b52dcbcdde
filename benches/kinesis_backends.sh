#!/usr/bin/env bash
# Kinesis API throughput on the two stream backends, in the same run, with the same load
# generator (`fleetcore bench kinesis`): fleetcore on the embedded segment log (the anchor) and
# fleetcore on NATS JetStream (Debian's nats-server, file storage, on this machine). Rounds
# alternate backends; the median round of each is reported. Raw JSON lands in $OUT.
#
#   benches/kinesis_backends.sh                       # 3 rounds of 200,000 records of 256 B
#   ROUNDS=1 RECORDS=50000 benches/kinesis_backends.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
RECORDS=${RECORDS:-200000}
SIZE=${SIZE:-256}
SHARDS=${SHARDS:-4}
WRITERS=${WRITERS:-8}
OUT=${OUT:-target/bench-results/kinesis-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || { apt-get update -qq && apt-get install -y -qq nats-server >/dev/null; }
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
: "${BIN:=${CARGO_TARGET_DIR:-$PWD/target}/release/fleetcore}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p fleetcore -q

PIDS=()
TMP=$(mktemp -d /tmp/fc-kinesis-bench.XXXXXX)
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; return 1; }

printf 'listen: 127.0.0.1:14222\nmax_payload: 2097152\njetstream { store_dir: "%s/nats" }\n' "$TMP" > "$TMP/nats.conf"
"$NATS" -c "$TMP/nats.conf" >"$TMP/nats.log" 2>&1 & PIDS+=($!)
wait_port 14222
"$BIN" serve --data-dir "$TMP/embedded" --http 127.0.0.1:18481 --mqtts off --log warn >"$TMP/embedded.log" 2>&1 & PIDS+=($!)
FLEETCORE_STREAM_BACKEND=jetstream FLEETCORE_STREAM_SERVERS=nats://127.0.0.1:14222 \
  "$BIN" serve --data-dir "$TMP/jetstream" --http 127.0.0.1:18482 --mqtts off --log warn >"$TMP/jetstream.log" 2>&1 & PIDS+=($!)
wait_port 18481; wait_port 18482

for round in $(seq 1 "$ROUNDS"); do
  for backend in embedded jetstream; do
    port=18481; [ "$backend" = jetstream ] && port=18482
    "$BIN" bench kinesis --endpoint "127.0.0.1:$port" --data-dir "$TMP/$backend" --stream "bench-$round" \
      --records "$RECORDS" --record-size "$SIZE" --shards "$SHARDS" --writers "$WRITERS" --json \
      > "$OUT/$backend-$round.json"
    echo "round $round $backend: $(cat "$OUT/$backend-$round.json")"
  done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys, statistics
out, rounds = sys.argv[1], int(sys.argv[2])
res = {b: [json.load(open(f"{out}/{b}-{r}.json")) for r in range(1, rounds + 1)] for b in ("embedded", "jetstream")}
def med(b, phase, key): return statistics.median(r[phase][key] for r in res[b])
print(f"\n| figure (median of {rounds}) | embedded (anchor) | JetStream | JetStream / embedded |")
print("|---|---|---|---|")
for phase, label in (("put", "PutRecords"), ("get", "GetRecords")):
    for key, unit in (("records_per_sec", "records/s"), ("mb_per_sec", "MB/s")):
        e, j = med("embedded", phase, key), med("jetstream", phase, key)
        print(f"| {label} {unit} | {e:,.2f} | {j:,.2f} | {j / e:.2f}x |")
PY
