#!/usr/bin/env bash
# Archive delivery throughput into the local lake (GZIP JSON lines and Parquet), beside its
# anchors measured in the same run on the same input: `gzip -1` (C zlib, the same level) and
# pyarrow (C++ JSON reader + Parquet writer, Snappy). Release build.
#
#   ARCHIVE_BENCH_MB=64 ROUNDS=3 benches/archive_throughput.sh
#
# Prints one JSON line per measurement and a median per figure. Needs .venv with pyarrow (test.sh
# installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
export ARCHIVE_BENCH_MB=${ARCHIVE_BENCH_MB:-64}
rounds=${ROUNDS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ARCHIVE_BENCH_INPUT="$work/input.jsonl"

cargo bench -q -p fleetcore-archive --bench lake_throughput --no-run 2>/dev/null
results="$work/results.jsonl"
for round in $(seq "$rounds"); do
  cargo bench -q -p fleetcore-archive --bench lake_throughput 2>/dev/null | tee -a "$results"
  mb=$(python3 -c "import os; print(os.path.getsize('$ARCHIVE_BENCH_INPUT') / 1e6)")
  start=$(date +%s.%N)
  gzip -1 -c "$ARCHIVE_BENCH_INPUT" > "$work/anchor.gz"
  end=$(date +%s.%N)
  python3 -c "import json; s=$end-$start; print(json.dumps({'format': 'gzip -1 (anchor)', 'input_mb': $mb, 'seconds': s, 'mb_per_s': $mb / s, 'lake_mb': $(stat -c %s "$work/anchor.gz") / 1e6}))" | tee -a "$results"
  .venv/bin/python - "$ARCHIVE_BENCH_INPUT" "$work/anchor.parquet" "$mb" <<'PY' | tee -a "$results"
import json, os, sys, time
import pyarrow.json as pj, pyarrow.parquet as pq
src, dst, mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
t = time.perf_counter()
pq.write_table(pj.read_json(src), dst, compression="snappy")
s = time.perf_counter() - t
print(json.dumps({"format": "pyarrow (anchor)", "input_mb": mb, "seconds": s, "mb_per_s": mb / s,
                  "lake_mb": os.path.getsize(dst) / 1e6}))
PY
  rm -f "$work/anchor.gz" "$work/anchor.parquet"
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rounds = {}  # format -> list per round (the k-th line of a format belongs to round k)
for r in rows:
    rounds.setdefault(r["format"], []).append(r)
anchor_of = lambda fmt: "gzip -1 (anchor)" if fmt.startswith("gzip") else "pyarrow (anchor)"
print("\nmedian of", max(len(v) for v in rounds.values()), "rounds (ratio: median of the per-round ratios)")
for fmt, rs in rounds.items():
    med = statistics.median(r["mb_per_s"] for r in rs)
    out = statistics.median(r["lake_mb"] for r in rs)
    extra = ""
    if "put_only_mb_per_s" in rs[0]:
        extra += f"  puts alone {statistics.median(r['put_only_mb_per_s'] for r in rs):.1f} MB/s"
    if "anchor" not in fmt:
        anchors = rounds[anchor_of(fmt)]
        ratio = statistics.median(r["mb_per_s"] / a["mb_per_s"] for r, a in zip(rs, anchors))
        extra += f"  {ratio:.2f}x {anchor_of(fmt)}"
    print(f"{fmt:22s} {med:7.1f} MB/s of input  output {out:5.1f} MB{extra}")
PY
