#!/usr/bin/env python3
"""fleetcore's SQL (DataFusion, `fleetcore sql`) beside DuckDB on the same Parquet files, in the
same run: a generated telemetry datastore (`--rows`, default 10M) laid out as fleetcore writes
it (`__dt=YYYY-MM-DD/` folders, Snappy Parquet), then a time-bucketed GROUP BY and a filtered
top-N, each run `--repeat` times per engine; the best wall time of each and the ratio
fleetcore / DuckDB (target: within 1.5x). fleetcore's time is the whole `fleetcore sql`
process (start, plan, read, print); DuckDB's is `execute().fetchall()` in this process. Each
query's rows must equal DuckDB's (value by value). Beside
it, the best CPU time (user + system, all threads) of each: on a shared machine the wall time
mostly measures the wait for a core, the CPU time much less. And, since DuckDB runs in this
process, the engines alone: `fleetcore sql --timing`'s own query time (tables found, query
planned and run, rows formatted) beside DuckDB's `execute().fetchall()`.

    .venv/bin/python benches/analytics_query.py --bin target/release/fleetcore [--rows 10000000]
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

DAY_MS = 86_400_000


def generate(folder: Path, rows: int, days: int = 10, devices: int = 1000, per_file: int = 1_000_000) -> None:
    """`rows` readings spread over `days` days, `per_file` rows a file, one folder per day."""
    import random
    rng = random.Random(7)
    start = 1_764_547_200_000  # 2025-12-01T00:00:00Z
    written = 0
    n = 0
    while written < rows:
        count = min(per_file, rows - written)
        ts = [start + (written + i) * (days * DAY_MS // rows) for i in range(count)]
        table = pa.table({
            "deviceId": pa.array([f"d{rng.randrange(devices)}" for _ in range(count)]),
            "ts": pa.array(ts, pa.int64()),
            "temp": pa.array([rng.gauss(50, 20) for _ in range(count)], pa.float64()),
            "humidity": pa.array([rng.randrange(100) for _ in range(count)], pa.int64()),
        })
        day = time.strftime("%Y-%m-%d", time.gmtime(ts[0] / 1000))
        out = folder / f"__dt={day}"
        out.mkdir(parents=True, exist_ok=True)
        # As the datastore writer (the parquet crate's defaults, Snappy) writes them: pages of
        # at most 20,000 rows and a page index (column and offset index).
        pq.write_table(table, out / f"gen-{n:04}.parquet", compression="snappy",
                       max_rows_per_page=20_000, write_page_index=True)
        written += count
        n += 1


QUERIES = {
    # hour buckets per device
    "group_by_hour": (
        "SELECT ts / 3600000 AS hour, deviceId, avg(temp) AS t, max(humidity) AS h FROM telemetry "
        "GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 5",
        "SELECT ts // 3600000 AS hour, deviceId, avg(temp) AS t, max(humidity) AS h FROM telemetry "
        "GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 5",
    ),
    # the ten hottest readings of one day
    "filtered_top_n": (
        "SELECT deviceId, ts, temp FROM telemetry WHERE __dt = '2025-12-03' AND temp > 90 "
        "ORDER BY temp DESC LIMIT 10",
        "SELECT deviceId, ts, temp FROM telemetry WHERE __dt = '2025-12-03' AND temp > 90 "
        "ORDER BY temp DESC LIMIT 10",
    ),
}


def same_row(ours: list[str], theirs: tuple) -> bool:
    """A row of fleetcore's CSV equals DuckDB's: integers and text exactly, floats to 1e-9
    (an average's last bits depend on the order of the sum)."""
    def same(a: str, b) -> bool:
        if isinstance(b, float):
            return math.isclose(float(a), b, rel_tol=1e-9)
        return a == str(b)
    return len(ours) == len(theirs) and all(map(same, ours, theirs))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/fleetcore")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", help="reuse/generate the data here (default: a temporary folder)")
    args = ap.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="analytics-bench-"))
    folder = base / "telemetry"
    if not folder.exists():
        t = time.monotonic()
        generate(folder, args.rows)
        print(f"generated {args.rows} rows in {time.monotonic() - t:.1f}s under {folder}")
    con = duckdb.connect()
    con.execute(f"CREATE VIEW telemetry AS SELECT * FROM read_parquet('{folder}/**/*.parquet', hive_partitioning = true)")
    print(f"load average {os.getloadavg()[0]:.2f}; DuckDB {duckdb.__version__} threads "
          f"{con.execute('SELECT current_setting(' + repr('threads') + ')').fetchone()[0]}")
    for name, (ours, theirs) in QUERIES.items():
        best_f = best_d = cpu_f = cpu_d = engine_f = float("inf")
        for _ in range(args.repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.monotonic()
            out = subprocess.run([args.bin, "sql", "--timing", "--table", f"telemetry={folder}", "--format", "csv",
                                  ours], capture_output=True, text=True)
            best_f = min(best_f, time.monotonic() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_f = min(cpu_f, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            assert out.returncode == 0, out.stderr
            engine_f = min(engine_f, float(re.search(r"query time: ([0-9.]+) ms", out.stderr).group(1)) / 1000)
            c = time.process_time()
            t = time.monotonic()
            rows = con.execute(theirs).fetchall()
            best_d = min(best_d, time.monotonic() - t)
            cpu_d = min(cpu_d, time.process_time() - c)
        ours_rows = list(csv.reader(io.StringIO(out.stdout)))[1:]
        assert len(ours_rows) == len(rows) and all(map(same_row, ours_rows, rows)), (out.stdout, rows)
        print(f"{name}: fleetcore {best_f * 1000:.0f} ms, DuckDB {best_d * 1000:.0f} ms, "
              f"ratio {best_f / best_d:.2f}; CPU fleetcore {cpu_f * 1000:.0f} ms, "
              f"DuckDB {cpu_d * 1000:.0f} ms, ratio {cpu_f / cpu_d:.2f}; engine only (both in-process, "
              f"no process start): fleetcore {engine_f * 1000:.1f} ms, DuckDB {best_d * 1000:.1f} ms, "
              f"ratio {engine_f / best_d:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
