"""Start and stop the broker under test: fleetcore (default) or Mosquitto (FLEETCORE_TEST_BROKER=
mosquitto), the latter to prove that the generic tests themselves are right."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pki

REPO = Path(__file__).resolve().parents[4]
MODE = os.environ.get("FLEETCORE_TEST_BROKER", "fleetcore").strip().lower() or "fleetcore"
FLEETCORE_BIN = Path(os.environ.get("FLEETCORE_BIN", REPO / "target" / "debug" / "fleetcore"))
HOST = "127.0.0.1"
START_DEADLINE = float(os.environ.get("FLEETCORE_TEST_START_DEADLINE", "60"))
STOP_DEADLINE = 20.0

ALL_BROKERS: list["Broker"] = []


_handed_out: set[int] = set()


# Under pytest-xdist each worker process hands out only the ports of its own residue class, so
# two workers never pick the same free port in the moment between probing it and a server
# binding it. Linux gives bind() odd ports first, so the class is taken of port / 2.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def free_port() -> int:
    """A port nothing listens on now and that this test run has not handed out before: the
    kernel may offer a just-released port again, and two listeners of one broker on the same
    port make it fail at start."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if (port >> 1) % _WORKERS == _WORKER and port not in _handed_out:
            _handed_out.add(port)
            return port


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(pred, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `pred` until it returns a truthy value or the deadline passes (then AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def let_time_pass(until: float) -> None:
    """Wait until time.monotonic() reaches `until`. Only for tests of time itself (an expiry or
    a delay must elapse), never to wait for the broker to finish something: use wait_until."""
    remaining = until - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


class BrokerStartError(AssertionError):
    pass


class Broker:
    """One broker process with its data dir and its five loopback ports (http is None for
    Mosquitto). `extra_args` are fleetcore flags; in Mosquitto mode the ones with a Mosquitto
    equivalent are translated, and `unsupported_in_mosquitto` lists the rest."""

    MOSQUITTO_EQUIV = {
        "--max-packet-size": "max_packet_size",
        "--max-inflight": "max_inflight_messages",
        "--max-queued-messages": "max_queued_messages",
        "--topic-alias-maximum": "max_topic_alias",
    }

    def __init__(self, workdir: Path, extra_args=(), allow_anonymous: bool = True, env=None,
                 config_toml: str | None = None, listener_flags: bool = True,
                 data_dir_flag: bool = True, name: str = "broker"):
        self.kind = MODE
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.host = HOST
        self.ports = {k: free_port() for k in ("mqtt", "mqtts", "ws", "wss", "http")}
        if self.kind == "mosquitto":
            self.ports["http"] = None
        self.extra_args = list(extra_args)
        self.allow_anonymous = allow_anonymous
        self.env = dict(env or {})
        self.config_toml = config_toml
        self.listener_flags = listener_flags
        self.data_dir_flag = data_dir_flag
        self.log_path = self.workdir / "broker.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.last_exit: int | None = None
        ALL_BROKERS.append(self)

    # -- paths
    @property
    def ca_pem(self) -> Path:
        return self.data_dir / "ca" / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.data_dir / "ca" / "ca.key"

    @property
    def server_pem(self) -> Path:
        return self.data_dir / "tls" / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.data_dir / "tls" / "server.key"

    @property
    def http_base(self) -> str:
        return f"http://{HOST}:{self.ports['http']}"

    def port(self, transport: str = "tcp", tls: bool = False) -> int:
        if transport == "websockets":
            return self.ports["wss" if tls else "ws"]
        return self.ports["mqtts" if tls else "mqtt"]

    # -- lifecycle
    def command(self) -> list[str]:
        if self.kind == "mosquitto":
            exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"  # Debian: /usr/sbin
            return [exe, "-c", str(self.workdir / "mosquitto.conf")]
        cmd = [str(FLEETCORE_BIN), "serve"]
        if self.config_toml is not None:
            cfg = self.workdir / "fleetcore.toml"
            cfg.write_text(self.config_toml)
            cmd += ["--config", str(cfg)]
        if self.data_dir_flag:
            cmd += ["--data-dir", str(self.data_dir)]
        if self.listener_flags:
            p = self.ports
            cmd += ["--http", f"{HOST}:{p['http']}", "--mqtt", f"{HOST}:{p['mqtt']}",
                    "--mqtts", f"{HOST}:{p['mqtts']}", "--ws", f"{HOST}:{p['ws']}",
                    "--wss", f"{HOST}:{p['wss']}"]
        if self.allow_anonymous:
            cmd.append("--allow-anonymous")
        return cmd + self.extra_args

    def _child_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCORE_")}
        env.setdefault("RUST_LOG", "info")
        env.setdefault("NO_COLOR", "1")  # plain log text for failure reports
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.env)
        return env

    def unsupported_in_mosquitto(self) -> list[str]:
        return [a for a in self.extra_args[::2] if a not in self.MOSQUITTO_EQUIV]

    def _write_mosquitto_conf(self) -> None:
        # Same file layout as fleetcore's first start, made by the suite.
        if not self.ca_pem.exists():
            pki.make_ca(self.ca_pem, self.ca_key)
            pki.make_server_cert(self.ca_pem, self.ca_key, self.server_pem, self.server_key)
        persist = self.data_dir / "mosquitto"
        persist.mkdir(parents=True, exist_ok=True)
        general = {"max_packet_size": None, "max_inflight_messages": None, "max_queued_messages": None}
        listener_opts = {}
        args = self.extra_args
        for i in range(0, len(args) - 1, 2):
            key = self.MOSQUITTO_EQUIV.get(args[i])
            if key == "max_topic_alias":
                listener_opts[key] = args[i + 1]
            elif key:
                general[key] = args[i + 1]
        lines = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")
        lines += [
            "per_listener_settings false",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "persistence true",
            f"persistence_location {persist}/",
            "autosave_interval 0",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
        ]
        lines += [f"{k} {v}" for k, v in general.items() if v is not None]
        tls = [f"cafile {self.ca_pem}", f"certfile {self.server_pem}", f"keyfile {self.server_key}",
               "require_certificate true", "use_identity_as_username true"]
        extra = [f"{k} {v}" for k, v in listener_opts.items()]
        p = self.ports
        lines += [f"listener {p['mqtt']} {HOST}", "protocol mqtt", *extra]
        lines += [f"listener {p['ws']} {HOST}", "protocol websockets", *extra]
        lines += [f"listener {p['mqtts']} {HOST}", "protocol mqtt", *tls, *extra]
        lines += [f"listener {p['wss']} {HOST}", "protocol websockets", *tls, *extra]
        (self.workdir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> "Broker":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self.kind == "mosquitto":
            self._write_mosquitto_conf()
        elif not FLEETCORE_BIN.exists():
            raise BrokerStartError(
                f"{FLEETCORE_BIN} does not exist: build it with `cargo build -p fleetcore` "
                "(or run against Mosquitto with FLEETCORE_TEST_BROKER=mosquitto)")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self._child_env(),
                                         cwd=self.workdir)
        self.wait_ready()
        return self

    def ready(self) -> bool:
        if self.kind == "mosquitto":
            return all(port_open(p) for k, p in self.ports.items() if p)
        try:
            with urllib.request.urlopen(self.http_base + "/health", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = START_DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BrokerStartError(
                    f"{self.kind} exited with {self.proc.returncode} during start-up\n{self.log_tail()}")
            if self.ready():
                return
            if time.monotonic() >= deadline:
                raise BrokerStartError(f"{self.kind} not ready within {timeout}s\n{self.log_tail()}")
            time.sleep(0.05)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = STOP_DEADLINE) -> int:
        """Send `sig` and wait for the exit; returns the exit code (killed with SIGKILL, and -9
        returned, if it does not exit by the deadline)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.last_exit = -9
                return -9
        self.last_exit = self.proc.returncode
        return self.last_exit

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> "Broker":
        """Graceful stop (SIGTERM, must exit 0), then start again on the same data dir and ports."""
        rc = self.stop(signal.SIGTERM)
        assert rc == 0, f"graceful shutdown exited with {rc}\n{self.log_tail()}"
        # The old process is gone; its ports are free again for the new one.
        return self.start()

    # -- observation
    def log_text(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, lines: int = 200, since: int = 0) -> str:
        text = self.log_text(since).splitlines()
        return "\n".join(text[-lines:])

    def http_get(self, path: str, timeout: float = 5) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http_base + path, timeout=timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def metrics(self) -> dict[str, float]:
        """Prometheus text parsed to {'name{labels}': value}; unlabelled series also under 'name',
        and every family under its bare name summed over labels."""
        status, text = self.http_get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        return parse_prometheus(text)


def parse_prometheus(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    sums: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "}" in line:
            cut = line.rindex("}") + 1
            series, rest = line[:cut], line[cut:].split()
        else:
            series, *rest = line.split()
        try:
            v = float(rest[0])
        except (ValueError, IndexError):
            continue
        out[series] = v
        base = series.split("{", 1)[0]
        sums[base] = sums.get(base, 0.0) + v
    for k, v in sums.items():
        out.setdefault(k, v)
        out[k + "@sum"] = v
    return out


def have_mosquitto_clients() -> bool:
    return shutil.which("mosquitto_pub") is not None and shutil.which("mosquitto_sub") is not None
