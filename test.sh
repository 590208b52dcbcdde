#!/usr/bin/env bash
# Runs every test of fleetcore: formatting, clippy, the Rust tests, the whole-system tests (the
# real binary on loopback, talked to by paho-mqtt, the Mosquitto command-line clients, boto3 and
# the aws CLI), and a short fuzz smoke run when a nightly toolchain is there. Installs what a
# fresh Debian 12 machine lacks. Extra arguments go to pytest, e.g. ./test.sh -k retained
#
#   FLEETCORE_TEST_BROKER=mosquitto ./test.sh   run only the generic system tests, against
#                                                Mosquitto (proves the tests themselves right)
#   FUZZ_SECONDS=0 ./test.sh                     skip the fuzz smoke run
#   PYTEST_WORKERS=1 ./test.sh                   system tests one at a time (default: 2 pytest-xdist
#                                                workers, each test file on one worker)
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD

mode=${FLEETCORE_TEST_BROKER:-fleetcore}
fuzz_seconds=${FUZZ_SECONDS:-30}
export DEBIAN_FRONTEND=noninteractive

stages=()
current=""
pytest_counts=""
cargo_passed=0
cargo_failed=0

summary() {
  local rc=$?
  [ -n "$current" ] && stages+=("$current: FAILED")
  echo
  echo "================ test.sh summary ================"
  local s
  for s in "${stages[@]}"; do echo "  $s"; done
  local p=0 f=0 k=0 n
  if [ -n "$pytest_counts" ]; then
    n=$(grep -oE '[0-9]+ passed' <<<"$pytest_counts" | grep -oE '[0-9]+' || true); p=${n:-0}
    n=$(grep -oE '[0-9]+ failed' <<<"$pytest_counts" | grep -oE '[0-9]+' || true); f=${n:-0}
    n=$(grep -oE '[0-9]+ error' <<<"$pytest_counts" | grep -oE '[0-9]+' || true); f=$((f + ${n:-0}))
    n=$(grep -oE '[0-9]+ skipped' <<<"$pytest_counts" | grep -oE '[0-9]+' || true); k=${n:-0}
  fi
  p=$((p + cargo_passed)); f=$((f + cargo_failed))
  # a failed stage that is not a test runner (fmt, clippy, build, fuzz) still counts as a failure
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  if [ "$rc" -eq 0 ]; then echo "test.sh: all stages passed"; else echo "test.sh: FAILED (exit $rc)"; fi
  echo "summary: $p passed, $f failed, $k skipped"
  exit "$rc"
}
trap summary EXIT

stage() { current=$1; echo; echo "==> $1"; }
done_stage() { stages+=("$current: ok${1:+ ($1)}"); current=""; }
skip_stage() { stages+=("$1: skipped ($2)"); echo; echo "==> $1: skipped ($2)"; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ------------------------------------------------------------------------------------------
stage "install missing packages"
missing=()
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
# the JetStream stream backend's tests start their own nats-server (Debian puts it in /usr/sbin)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
# the scale-out tests (PgStore, test_scaleout.py) start their own PostgreSQL from its binaries
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# nodejs* functions run on the machine's Node.js (Debian 12: 18.x)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
# the Node.js function example (examples/functions/node-enrich) is deployed after `npm ci`; its
# AWS SDK for JavaScript v3 declares node >= 20 (on Debian 12's 18.x npm only warns, EBADENGINE;
# the SDK was not tried there: this machine has NodeSource's 20.x)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# the web console's browser tests drive Debian's Chromium through chromedriver (Selenium)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ "$mode" = mosquitto ]; then
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
fi
venv_ok() { [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys' >/dev/null 2>&1; }
if ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
elif ! venv_ok; then
  venv_probe=$(mktemp -d)
  python3 -m venv "$venv_probe/v" >/dev/null 2>&1 || missing+=(python3-venv)
  rm -rf "$venv_probe"
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# the Rust-to-wasm function example (examples/functions/rust-wasm-enrich) is built by its system
# test for wasm32-unknown-unknown with the toolchain rust-toolchain.toml pins (run from here, so
# rustup resolves that toolchain)
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
  missing+=("wasm32-unknown-unknown (rustup)")
fi
# Debian puts mosquitto itself in /usr/sbin
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
done_stage "${missing[*]:-nothing missing}"

stage "python virtual environment (.venv)"
if ! venv_ok; then
  rm -rf .venv  # absent, or left over from another machine's python
  python3 -m venv .venv
fi
# botocore 1.42.50 is the last release with the iotanalytics client (gone from 1.42.51; iotevents
# lasts until 1.43.x); boto3 1.42.50 and awscli 1.44.40 are the releases built on it.
.venv/bin/python -m pip install -q --disable-pip-version-check 'paho-mqtt>=2,<3' pytest 'pytest-xdist>=3.6,<4' cryptography \
  'botocore==1.42.50' 'boto3==1.42.50' 'awscli==1.44.40'
# archive tests: moto_server is the S3-compatible destination (started on loopback by the tests),
# pyarrow reads the Parquet objects, cramjam the Snappy (framing format) ones.
.venv/bin/python -m pip install -q --disable-pip-version-check 'moto[server]' pyarrow cramjam \
  'botocore==1.42.50' 'boto3==1.42.50'
# sns tests: aiosmtpd is the SMTP server email subscriptions are delivered to.
.venv/bin/python -m pip install -q --disable-pip-version-check 'aiosmtpd>=1.4,<2'
# fleet provisioning tests: the AWS IoT Device SDK v2 for Python (its iotidentity client; the
# awscrt wheel is a manylinux binary, nothing to compile).
.venv/bin/python -m pip install -q --disable-pip-version-check 'awsiotsdk==1.31.0'
# web console tests: Selenium drives the system Chromium through the system chromedriver.
.venv/bin/python -m pip install -q --disable-pip-version-check 'selenium>=4.20,<5'
# analytics tests: DuckDB reads the datastores' Parquet files (the open layout); a manylinux wheel.
.venv/bin/python -m pip install -q --disable-pip-version-check 'duckdb>=1.4,<2'
done_stage

# ------------------------------------------------------------------------------------------
if [ "$mode" = mosquitto ]; then
  for s in "cargo fmt" "cargo clippy" "cargo test" "cargo build"; do skip_stage "$s" "FLEETCORE_TEST_BROKER=mosquitto"; done
else
  stage "cargo fmt --all -- --check"
  cargo fmt --all -- --check
  done_stage

  stage "cargo clippy --workspace --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings
  done_stage

  stage "cargo test --workspace"
  cargo_log=$(mktemp)
  cargo test --workspace 2>&1 | tee "$cargo_log"
  while read -r passed failed; do
    cargo_passed=$((cargo_passed + passed)); cargo_failed=$((cargo_failed + failed))
  done < <(sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$cargo_log")
  rm -f "$cargo_log"
  done_stage "$cargo_passed passed"

  stage "cargo build -p fleetcore -p fleetcore-conncount"
  # conncount (benches/conncount) is the load tool of test_connection_count.py
  cargo build -p fleetcore -p fleetcore-conncount
  export FLEETCORE_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/fleetcore"
  "$FLEETCORE_BIN" serve --help >/dev/null
  done_stage
fi

# ------------------------------------------------------------------------------------------
pytest_workers=${PYTEST_WORKERS:-2}
stage "system tests (pytest, broker: $mode, $pytest_workers workers)"
export FLEETCORE_TEST_BROKER=$mode
# The system tests mostly wait on sockets and child processes, so two workers (pytest-xdist)
# roughly halve the stage on two cores. A test file stays on one worker (--dist loadfile): its
# module fixtures are made once, and brokers.free_port keeps the workers' ports apart.
xdist=()
[ "$pytest_workers" -gt 1 ] && xdist=(-n "$pytest_workers" --dist loadfile)
pytest_log=$(mktemp)
set +e
.venv/bin/python -m pytest crates/fleetcore/tests/system -q -p no:cacheprovider "${xdist[@]}" "$@" 2>&1 | tee "$pytest_log"
pytest_rc=${PIPESTATUS[0]}
set -e
pytest_counts=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error)' "$pytest_log" | tail -n 1 || true)
rm -f "$pytest_log"
if [ "$pytest_rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here"
fi
[ "$pytest_rc" -eq 0 ] || exit "$pytest_rc"
done_stage "${pytest_counts//=/}"

# ------------------------------------------------------------------------------------------
if [ "$mode" = mosquitto ]; then
  skip_stage "fuzz smoke run" "FLEETCORE_TEST_BROKER=mosquitto"
elif [ "$fuzz_seconds" = 0 ]; then
  skip_stage "fuzz smoke run" "FUZZ_SECONDS=0"
elif ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  skip_stage "fuzz smoke run" "no nightly toolchain"
elif [ ! -f fuzz/Cargo.toml ] || ! grep -q 'name *= *"decode"' fuzz/Cargo.toml; then
  skip_stage "fuzz smoke run" "no fuzz target 'decode' in fuzz/"
else
  stage "cargo +nightly fuzz run decode (${fuzz_seconds}s)"
  if ! cargo +nightly fuzz --help >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
  fi
  # new inputs go to fuzz/corpus/decode (ignored by git); the committed seeds are read too
  mkdir -p "$root/fuzz/corpus/decode"
  fuzz_args=("$root/fuzz/corpus/decode")
  [ -d "$root/fuzz/seeds/decode" ] && fuzz_args+=("$root/fuzz/seeds/decode")
  libfuzzer_args=(-max_total_time="$fuzz_seconds")
  [ -f "$root/fuzz/mqtt.dict" ] && libfuzzer_args+=(-dict="$root/fuzz/mqtt.dict")
  cargo +nightly fuzz run decode "${fuzz_args[@]}" -- "${libfuzzer_args[@]}"
  done_stage "${fuzz_seconds}s, no crash"
  if grep -q 'name *= *"rule_sql"' fuzz/Cargo.toml; then
    # rule SQL (compile + evaluate): a few seconds; its seeds and dictionary live in fuzz/
    rule_sql_seconds=$(( fuzz_seconds < 10 ? fuzz_seconds : 10 ))
    stage "cargo +nightly fuzz run rule_sql (${rule_sql_seconds}s)"
    mkdir -p "$root/fuzz/corpus/rule_sql"
    cargo +nightly fuzz run rule_sql "$root/fuzz/corpus/rule_sql" "$root/fuzz/seeds/rule_sql" -- \
      -max_total_time="$rule_sql_seconds" -dict="$root/fuzz/rule_sql.dict"
    done_stage "${rule_sql_seconds}s, no crash"
  fi
  if grep -q 'name *= *"shadow_update"' fuzz/Cargo.toml; then
    # shadow update requests (parse + merge + delta on untrusted JSON): a few seconds
    shadow_seconds=$(( fuzz_seconds < 10 ? fuzz_seconds : 10 ))
    stage "cargo +nightly fuzz run shadow_update (${shadow_seconds}s)"
    mkdir -p "$root/fuzz/corpus/shadow_update"
    shadow_args=("$root/fuzz/corpus/shadow_update")
    [ -d "$root/fuzz/seeds/shadow_update" ] && shadow_args+=("$root/fuzz/seeds/shadow_update")
    cargo +nightly fuzz run shadow_update "${shadow_args[@]}" -- -max_total_time="$shadow_seconds"
    done_stage "${shadow_seconds}s, no crash"
  fi
  if grep -q 'name *= *"events_expression"' fuzz/Cargo.toml; then
    # IoT Events expressions (parse + evaluate untrusted model text): a few seconds
    events_seconds=$(( fuzz_seconds < 10 ? fuzz_seconds : 10 ))
    stage "cargo +nightly fuzz run events_expression (${events_seconds}s)"
    mkdir -p "$root/fuzz/corpus/events_expression"
    events_args=("$root/fuzz/corpus/events_expression")
    [ -d "$root/fuzz/seeds/events_expression" ] && events_args+=("$root/fuzz/seeds/events_expression")
    cargo +nightly fuzz run events_expression "${events_args[@]}" -- -max_total_time="$events_seconds"
    done_stage "${events_seconds}s, no crash"
  fi
fi
