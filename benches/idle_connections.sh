#!/usr/bin/env bash
# Idle connections, fleetcore beside Mosquitto in the same run: the broker's resident memory per
# idle connection, (RSS with N connected and idle for SETTLE s - RSS before) / N, at each count
# in COUNTS, plain TCP, driven by conncount (benches/conncount: one epoll loop, connections bound
# to source addresses spread over 127.0.0.0/8); then a QoS 1 publish to each of 1,000 of them
# must arrive. mTLS at TLS_COUNT is measured by broker_vs_mosquitto.sh's memory scenario (it
# registers the client certificate fleetcore needs).
#
#   benches/idle_connections.sh                             # 10,000 and 200,000 plain, 10,000 mTLS
#   COUNTS=10000 TLS_COUNT=0 benches/idle_connections.sh    # 10,000 plain only
#   FLEETCORE_BIN=/path/to/fleetcore benches/idle_connections.sh  # another build, not rebuilt
#   CONNCOUNT=/path/to/conncount ...                        # a built conncount, not rebuilt
#
# Each broker needs N + a few hundred open files, and so does conncount: a count above the hard
# limit (`ulimit -Hn`; raise it as root, with fs.nr_open) is skipped with a note. All traffic
# stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${COUNTS:-10000 200000}
TLS_COUNT=${TLS_COUNT:-10000}
SETTLE=${SETTLE:-5}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
OUT=${OUT:-target/bench-results/idle-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
hard=$(ulimit -Hn)

command -v mosquitto >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }
# built one at a time: built together, feature unification gives fleetcore other dependency
# builds than broker_vs_mosquitto.sh's `cargo build -p fleetcore`, and one would rebuild for the other
# FLEETCORE_BIN=path measures that binary instead (e.g. main's build, for a before/after pair).
if [ -n "${FLEETCORE_BIN:-}" ]; then BIN=$FLEETCORE_BIN; else
  cargo build --release -p fleetcore -q
  BIN=$PWD/target/release/fleetcore
fi
# CONNCOUNT=path uses that build of the tool (e.g. while a release build holds target/).
if [ -z "${CONNCOUNT:-}" ]; then
  cargo build --release -p fleetcore-conncount -q
  CONNCOUNT=$PWD/target/release/conncount
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { # port
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listening on 127.0.0.1:$1" >&2; return 1
}
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }

echo "machine: $(nproc) cores; open files hard limit $hard; fs.nr_open $(cat /proc/sys/fs/nr_open);" \
  "ports $(cat /proc/sys/net/ipv4/ip_local_port_range | tr '\t' -)" >&2
# Fresh ports for every count: the previous broker's closed connections leave its port in
# TIME_WAIT, and Mosquitto cannot listen on it again at once.
# PORT=base of the loopback ports (4 per count, then PORT+100.. for the mTLS part)
port=${PORT:-18960}
for n in $COUNTS; do
  port=$((port + 4))
  if [ "$hard" != unlimited ] && [ "$hard" -lt $((n + 256)) ]; then
    echo "== $n connections: SKIPPED, the hard open-files limit is $hard (needs $((n + 256)) per process)" >&2
    echo "{\"skipped\": \"hard open-files limit $hard\"}" >"$OUT/plain_$n.skipped.json"
    continue
  fi
  echo "== $n idle plain connections, fresh brokers" >&2
  MQ=$("$SHARED/tools/mosquitto-anchor.sh" "$port"); PIDS+=("$MQ")
  "$CONNCOUNT" --port "$port" --connections "$n" --broker-pid "$MQ" --settle "$SETTLE" \
    >"$OUT/plain_$n.mosquitto.json" || echo "  mosquitto run failed (see $OUT/plain_$n.mosquitto.json)" >&2
  stop "$MQ"
  data=$(mktemp -d /tmp/fc-idle.XXXXXX)
  "$BIN" serve --data-dir "$data" --mqtt "127.0.0.1:$((port + 1))" --mqtts "127.0.0.1:$((port + 2))" \
    --http "127.0.0.1:$((port + 3))" \
    --allow-anonymous --log warn >>"$OUT/fleetcore.log" 2>&1 &
  FC=$!; PIDS+=("$FC")
  wait_port $((port + 1)); wait_port $((port + 3))
  "$CONNCOUNT" --port $((port + 1)) --connections "$n" --broker-pid "$FC" --settle "$SETTLE" \
    >"$OUT/plain_$n.fleetcore.json" || echo "  fleetcore run failed (see $OUT/plain_$n.fleetcore.json)" >&2
  stop "$FC"; rm -rf "$data"
done

python3 - "$OUT" $COUNTS <<'PY'
import json, sys, os
out, counts = sys.argv[1], sys.argv[2:]
print("| idle plain connections | fleetcore KiB/conn | Mosquitto KiB/conn | ratio | fleetcore ok | Mosquitto ok |")
print("|---|---|---|---|---|---|")
for n in counts:
    def load(who):
        try:
            return json.load(open(os.path.join(out, f"plain_{n}.{who}.json")))
        except (OSError, ValueError):
            return None
    fc, mq = load("fleetcore"), load("mosquitto")
    if fc is None and mq is None:
        print(f"| {int(n):,} | skipped | skipped | - | - | - |")
        continue
    kib = lambda r: r and r.get("broker_memory") and r["broker_memory"]["per_connection_kib"]
    a, b = kib(fc), kib(mq)
    ratio = f"{a / b:.2f}x" if a and b else "-"
    ok = lambda r: "-" if r is None else ("yes" if r.get("ok") else f"NO: {r.get('first_error')}")
    print(f"| {int(n):,} | {a} | {b} | {ratio} | {ok(fc)} | {ok(mq)} |")
print(f"\nraw results: {out}")
PY

if [ "$TLS_COUNT" != 0 ]; then
  echo "== mTLS: $TLS_COUNT idle connections (benches/broker_vs_mosquitto.sh, memory scenario)" >&2
  PORT=$((${PORT:-18800} + 100)) SCENARIOS=memory IDLE="$TLS_COUNT" OUT="$OUT/mtls" benches/broker_vs_mosquitto.sh
fi
