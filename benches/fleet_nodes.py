"""`fleetcore serve` nodes for the Python benches: each in a temporary data folder, with the
admin keys given, its HTTP API on the port given, no TLS listener and its log in the data
folder (`<data>/log`); and the private PostgreSQL a cluster of them shares."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "crates/fleetcore/tests/system"))

from brokers import HOST, wait_until  # noqa: E402
from pgserver import PostgresServer, find_bin_dir  # noqa: E402


def start_postgres() -> PostgresServer:
    """A private PostgreSQL (the system tests' `pgserver.py`); exits when none is installed."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (test.sh installs it)")
    return PostgresServer(bin_dir).start()


def start_node(binary: str, name: str, port: int, flags: list[str],
               keys: tuple[str, str]) -> tuple[subprocess.Popen, str]:
    """Node `name` started with `flags`; returns it and its HTTP base URL once /health answers."""
    data = Path(tempfile.mkdtemp(prefix=f"fleetcore-bench-{name}-"))
    env = dict(os.environ, FLEETCORE_ACCESS_KEY_ID=keys[0], FLEETCORE_SECRET_ACCESS_KEY=keys[1])
    node = subprocess.Popen([binary, "serve", "--data-dir", str(data), "--http", f"{HOST}:{port}",
                             "--mqtts", "off", *flags], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(data / "log", "wb"))
    url = f"http://{HOST}:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False
    wait_until(up, 60, what=f"node {name}")
    return node, url
