#!/usr/bin/env bash
# Side-by-side MQTT benchmark: fleetcore's broker against Mosquitto (Debian), on the same
# machine, in the same run, driven by the same load generator (`fleetcore bench`). Prints a
# table of each figure with its ratio to Mosquitto; raw JSON lands in $OUT.
#
#   benches/broker_vs_mosquitto.sh            # everything, 10 s per throughput run, 3 rounds
#   DURATION=5 ROUNDS=1 benches/broker_vs_mosquitto.sh
#   SCENARIOS=memory OUT=target/bench-results/X benches/broker_vs_mosquitto.sh   # one part, merged into X
#   PORT=24100 benches/broker_vs_mosquitto.sh   # ports PORT..PORT+39 instead of 18900..18939
#
# Throughput runs alternate brokers round by round and report the median round, so slow drift of
# a noisy machine hits both. Memory runs start each broker fresh and report the broker's RSS
# growth per connection measured after the connections sat idle for 3 s.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-10000}
SCENARIOS=${SCENARIOS:-throughput memory access}
# PORT=first of the 40 loopback ports used (18900 unless given)
P=${PORT:-18900}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
OUT=${OUT:-target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

command -v mosquitto >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }
# FLEETCORE_BIN=path measures that binary instead, without building.
if [ -n "${FLEETCORE_BIN:-}" ]; then BIN=$FLEETCORE_BIN; else
  cargo build --release -p fleetcore -q
  BIN=$PWD/target/release/fleetcore
fi
export RUST_BACKTRACE=0

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { # host port
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listening on $1:$2" >&2; return 1
}

FC_DATA=$(mktemp -d /tmp/fc-bench.XXXXXX)
start_fleetcore() { # plain-port tls-port http-port [extra serve flags...] -> pid
  local plain=$1 tls=$2 http=$3; shift 3
  "$BIN" serve --data-dir "$FC_DATA" --mqtt "127.0.0.1:$plain" --mqtts "127.0.0.1:$tls" \
    --http "127.0.0.1:$http" --allow-anonymous --log warn "$@" >>"$OUT/fleetcore.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_port 127.0.0.1 "$plain" >&2
  wait_port 127.0.0.1 "$http" >&2
  echo "$pid"
}
start_mosquitto() { # port [tls] -> pid
  local pid
  if [ "${2:-}" = tls ]; then
    pid=$("$SHARED/tools/mosquitto-anchor.sh" "$1" tls "$FC_DATA/ca/ca.pem" "$FC_DATA/tls/server.pem" "$FC_DATA/tls/server.key")
  else
    pid=$("$SHARED/tools/mosquitto-anchor.sh" "$1")
  fi
  PIDS+=("$pid")
  echo "$pid"
}
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }

bench() { # name port args...
  local name=$1 port=$2; shift 2
  "$BIN" bench --port "$port" --json "$@" >"$OUT/$name.json" 2>>"$OUT/bench.log" || true
}

# Certificates: fleetcore's first start creates the CA and the server certificate; a client
# certificate for the TLS runs is signed with that CA by openssl.
FC=$(start_fleetcore $((P + 1)) $((P + 2)) $((P + 3)))
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench \
  -keyout "$OUT/client.key" -out "$OUT/client.csr" 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n' >"$OUT/client.ext"
openssl x509 -req -in "$OUT/client.csr" -CA "$FC_DATA/ca/ca.pem" -CAkey "$FC_DATA/ca/ca.key" \
  -CAcreateserial -CAserial "$OUT/ca.srl" -days 1 -extfile "$OUT/client.ext" -out "$OUT/client.pem" 2>/dev/null
TLS_ARGS=(--tls --ca "$FC_DATA/ca/ca.pem" --cert "$OUT/client.pem" --key "$OUT/client.key" --host localhost)
# fleetcore admits a certificate only when it is registered, ACTIVE and has a policy that allows
# the connection: register the bench certificate with an allow-all policy, and create the
# realistic device policy the authorization-cost runs evaluate for anonymous clients.
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install -q 'boto3==1.42.50' 'botocore==1.42.50'; }
.venv/bin/python - "$FC_DATA" $((P + 3)) "$OUT/client.pem" <<'PY'
import configparser, json, sys, boto3
data, port, cert = sys.argv[1], sys.argv[2], sys.argv[3]
cp = configparser.ConfigParser(); cp.read(f"{data}/credentials")
iot = boto3.client("iot", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                   aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                   aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"])
arn = "arn:aws:iot:us-east-1:000000000000"
iot.create_policy(policyName="bench-allow-all", policyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}))
# The shape of the reference device policy, keyed on the client id: connect as yourself,
# publish and receive under bench/, subscribe to bench filters, and one explicit Deny.
iot.create_policy(policyName="bench-device", policyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{arn}:client/${{iot:ClientId}}"},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": f"{arn}:topic/bench/*"},
    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": f"{arn}:topicfilter/bench/*"},
    {"Effect": "Deny", "Action": "iot:Publish", "Resource": f"{arn}:topic/bench/forbidden/*"}]}))
c = iot.register_certificate_without_ca(certificatePem=open(cert).read(), status="ACTIVE")
iot.attach_policy(policyName="bench-allow-all", target=c["certificateArn"])
PY
stop "$FC"

if [[ " $SCENARIOS " == *" throughput "* ]]; then
echo "== throughput and latency ($ROUNDS rounds x ${DURATION}s)" >&2
MQ=$(start_mosquitto $((P + 10)))
FC=$(start_fleetcore $((P + 11)) $((P + 12)) $((P + 13)))
for round in $(seq 1 "$ROUNDS"); do
  for who in mosquitto fleetcore; do
    port=$((P + 10)); [ $who = fleetcore ] && port=$((P + 11))
    bench "fanin_qos0.$who.$round" $port --publishers 8 --subscribers 1 --qos 0 --duration "$DURATION"
    bench "fanin_qos1.$who.$round" $port --publishers 8 --subscribers 1 --qos 1 --duration "$DURATION"
    bench "latency_qos1_5k.$who.$round" $port --publishers 8 --subscribers 1 --qos 1 --rate 5000 --duration "$DURATION"
  done
done
stop "$MQ"; stop "$FC"
fi

if [[ " $SCENARIOS " == *" memory "* ]]; then
echo "== memory per idle connection ($IDLE connections, fresh brokers)" >&2
MQ=$(start_mosquitto $((P + 20)))
bench "idle_plain.mosquitto.1" $((P + 20)) --connections "$IDLE" --idle --broker-pid "$MQ" --duration 3
stop "$MQ"
FC=$(start_fleetcore $((P + 21)) $((P + 22)) $((P + 23)))
bench "idle_plain.fleetcore.1" $((P + 21)) --connections "$IDLE" --idle --broker-pid "$FC" --duration 3
stop "$FC"
MQ=$(start_mosquitto $((P + 24)) tls)
bench "idle_mtls.mosquitto.1" $((P + 24)) "${TLS_ARGS[@]}" --connections "$IDLE" --idle --broker-pid "$MQ" --duration 3
stop "$MQ"
FC=$(start_fleetcore $((P + 25)) $((P + 26)) $((P + 27)))
bench "idle_mtls.fleetcore.1" $((P + 26)) "${TLS_ARGS[@]}" --connections "$IDLE" --idle --broker-pid "$FC" --duration 3
stop "$FC"
fi

if [[ " $SCENARIOS " == *" access "* ]]; then
echo "== authorization cost and TLS handshakes ($ROUNDS rounds)" >&2
# Same plain-TCP QoS 1 fan-in, once with anonymous clients allowed everything and once governed
# by the device policy (every PUBLISH and every delivery asks the policy grant).
for round in $(seq 1 "$ROUNDS"); do
  FC=$(start_fleetcore $((P + 31)) $((P + 32)) $((P + 33)))
  bench "authz_off.fleetcore.$round" $((P + 31)) --publishers 8 --subscribers 1 --qos 1 --duration "$DURATION"
  stop "$FC"
  FC=$(start_fleetcore $((P + 31)) $((P + 32)) $((P + 33)) --anonymous-policy bench-device)
  bench "authz_on.fleetcore.$round" $((P + 31)) --publishers 8 --subscribers 1 --qos 1 --duration "$DURATION"
  stop "$FC"
  MQ=$(start_mosquitto $((P + 34)) tls)
  bench "handshakes.mosquitto.$round" $((P + 34)) "${TLS_ARGS[@]}" --connections 2000 --idle --duration 1
  stop "$MQ"
  FC=$(start_fleetcore $((P + 35)) $((P + 36)) $((P + 37)))
  bench "handshakes.fleetcore.$round" $((P + 36)) "${TLS_ARGS[@]}" --connections 2000 --idle --duration 1
  stop "$FC"
done
fi

python3 - "$OUT" <<'PY'
import json, statistics, sys, glob, os
out = sys.argv[1]
runs = {}
for path in glob.glob(os.path.join(out, "*.json")):
    name, who, _round = os.path.basename(path)[:-5].split(".")
    try:
        runs.setdefault((name, who), []).append(json.load(open(path)))
    except ValueError:
        pass
def idle_kib(r):
    m = r.get("broker_memory")
    if not m or not r.get("connected"):
        return None
    return (m["end_kib"] - m["before_kib"]) / r["connected"]
def med(name, who, f):
    vals = [f(r) for r in runs.get((name, who), []) if f(r) is not None]
    return statistics.median(vals) if vals else None
rows = [
    ("QoS 0 fan-in 8->1, 256 B: received msg/s", "fanin_qos0", lambda r: r["received_per_s"], True),
    ("QoS 0 fan-in: loss %", "fanin_qos0", lambda r: r["loss_pct"], False),
    ("QoS 1 fan-in 8->1, 256 B: received msg/s", "fanin_qos1", lambda r: r["received_per_s"], True),
    ("QoS 1 fan-in: loss %", "fanin_qos1", lambda r: r["loss_pct"], False),
    ("QoS 1 at 5,000 msg/s: p50 latency us", "latency_qos1_5k", lambda r: r["latency_us"]["p50"], False),
    ("QoS 1 at 5,000 msg/s: p99 latency us", "latency_qos1_5k", lambda r: r["latency_us"]["p99"], False),
    ("QoS 1 at 5,000 msg/s: p99.9 latency us", "latency_qos1_5k", lambda r: r["latency_us"]["p999"], False),
    ("idle plain: RSS KiB per connection", "idle_plain", idle_kib, False),
    ("idle mTLS: RSS KiB per connection", "idle_mtls", idle_kib, False),
    ("mTLS handshakes (CONNECT included) per s, 2,000 connections", "handshakes", lambda r: r.get("connects_per_s"), True),
]
print(f"| figure | fleetcore | Mosquitto | fleetcore / Mosquitto |")
print(f"|---|---|---|---|")
for label, name, f, _higher in rows:
    a, b = med(name, "fleetcore", f), med(name, "mosquitto", f)
    ratio = f"{a / b:.2f}x" if a is not None and b not in (None, 0) else "-"
    fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}")
    print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio} |")
off = med("authz_off", "fleetcore", lambda r: r["received_per_s"])
on = med("authz_on", "fleetcore", lambda r: r["received_per_s"])
if off and on:
    print(f"\n| QoS 1 fan-in 8->1, plain TCP | without policy | with the device policy | cost |")
    print(f"|---|---|---|---|")
    print(f"| received msg/s | {off:,.0f} | {on:,.0f} | {100 * (1 - on / off):.1f} % |")
print(f"\nraw results: {out}")
PY
