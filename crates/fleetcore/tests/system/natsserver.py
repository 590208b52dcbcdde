"""A private `nats-server -js` for the tests of the JetStream stream backend: a free loopback
port, a store folder of the test's own. nats-server must be installed (test.sh installs the Debian
package): without it these tests fail with a clear message, they are never skipped."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

from brokers import HOST, free_port, port_open, wait_until

NATS_BIN = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsServer:
    """One nats-server with JetStream. `max_payload` defaults to 2 MiB so 1 MiB records fit
    (nats-server's own default is 1 MiB)."""

    def __init__(self, workdir: Path, max_payload: int | None = 2 << 20):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.monitor_port = free_port()
        self.max_payload = max_payload
        self.log_path = self.workdir / "nats.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def start(self) -> "NatsServer":
        if not Path(NATS_BIN).exists():
            raise AssertionError(
                "nats-server is not installed: the JetStream backend tests need it "
                "(apt-get install nats-server; test.sh does this)")
        conf = self.workdir / "nats.conf"
        lines = [f"listen: {HOST}:{self.port}", f"http: {HOST}:{self.monitor_port}",
                 f'jetstream {{ store_dir: "{self.workdir / "store"}" }}']
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        conf.write_text("\n".join(lines) + "\n")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([NATS_BIN, "-c", str(conf)], stdout=log, stderr=log)
        wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, 15,
                   what=f"nats-server on port {self.port}")
        if self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited: {self.log_path.read_text()[-2000:]}")
        return self

    def consumer_details(self, stream: str) -> list[dict]:
        """`stream`'s consumers (name, num_waiting, ...), from the server's monitoring
        endpoint."""
        url = f"http://{HOST}:{self.monitor_port}/jsz?streams=true&consumers=true"
        with urllib.request.urlopen(url, timeout=5) as r:
            jsz = json.loads(r.read())
        return [c
                for account in jsz.get("account_details", [])
                for s in account.get("stream_detail", []) if s["name"] == stream
                for c in s.get("consumer_detail", [])]

    def consumers(self, stream: str) -> list[str]:
        """The names of `stream`'s consumers."""
        return [c["name"] for c in self.consumer_details(stream)]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
