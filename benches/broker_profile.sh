#!/usr/bin/env bash
# Profile of the broker's per-message cost under a neutral load tool: the broker pinned to CPU 0,
# `mqttv5 bench` (fan-in 10 -> 1, 256-byte payloads) pinned to CPU 1, and either `perf record`
# (cpu-clock: hardware counters are not available here) or `strace -c` attached to the broker.
# Needs an unstripped build for symbols: CARGO_PROFILE_RELEASE_STRIP=false cargo build --release.
#
#   BIN=target/release/fleetcore QOS=1 benches/broker_profile.sh          # perf -> $OUT/perf.data
#   MODE=strace BIN=target/release/fleetcore QOS=1 benches/broker_profile.sh
#
# Then `perf report -i $OUT/perf.data --no-children --sort symbol --stdio -g none`; broker CPU
# per delivered message = the report's event count (ns) / (throughput_steady * PERF_SECONDS).
# Where the kernel time comes from: `perf report -i $OUT/perf.data --children --sort symbol
# --stdio -g caller,0.5,callee --symbol-filter=__tcp_transmit_skb` (ACKs sent from recvfrom,
# segments sent from sendto). ISOLATE=rt runs broker, tool and perf at SCHED_RR priority (root
# only), for a machine busy with other jobs.
set -euo pipefail
BIN=${BIN:?BIN=path of the fleetcore binary}
QOS=${QOS:-1}
MODE=${MODE:-perf}
ISOLATE=${ISOLATE:-none}
RT=(); [ "$ISOLATE" = rt ] && RT=(chrt -r 1)
RT2=(); [ "$ISOLATE" = rt ] && RT2=(chrt -r 2)
PORT=${PORT:-28960}
DURATION=${DURATION:-8}
PERF_SECONDS=${PERF_SECONDS:-6}
MQTTV5=${MQTTV5:-$(command -v mqttv5 || echo /root/.cargo/bin/mqttv5)}
OUT=${OUT:-target/bench-results/profile-$MODE-q$QOS-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
data=$(mktemp -d /tmp/fc-profile.XXXXXX)
taskset -c 0 "$BIN" serve --data-dir "$data" --mqtt "127.0.0.1:$PORT" --mqtts off \
  --http "127.0.0.1:$((PORT + 1))" --allow-anonymous --log warn >"$OUT/broker.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
taskset -a -p -c 0 "$pid" >/dev/null
if [ "$ISOLATE" = rt ]; then
  for t in /proc/"$pid"/task/*; do chrt -r -p 1 "${t##*/}" >/dev/null; done
fi
if [ "$MODE" = perf ]; then
  "${RT2[@]}" perf record -e cpu-clock -g -p "$pid" -o "$OUT/perf.data" -- sleep "$PERF_SECONDS" >/dev/null 2>&1 &
else
  "${RT2[@]}" strace -c -f -p "$pid" -o "$OUT/strace.txt" 2>/dev/null &
fi
watcher=$!
"${RT[@]}" taskset -c 1 "$MQTTV5" bench --mode throughput --host 127.0.0.1 --port "$PORT" --payload-size 256 \
  --duration "$DURATION" --publishers 10 --subscribers 1 --qos "$QOS" >"$OUT/mqttv5.json" 2>"$OUT/mqttv5.log"
[ "$MODE" = perf ] || kill -INT "$watcher"
wait "$watcher" || true
python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; print("delivered msg/s:", int(r["throughput_steady"]))' "$OUT/mqttv5.json"
echo "results: $OUT"
