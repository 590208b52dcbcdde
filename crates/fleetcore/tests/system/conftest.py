"""Fixtures for the whole-system tests: the real broker binary on free loopback ports with a temp
data dir, clients bound to it, and the broker's log printed when a test fails.

FLEETCORE_TEST_BROKER=mosquitto runs the generic MQTT tests against Mosquitto instead (same
listeners: plain, websockets, TLS and WSS with required client certificates; persistence on), to
prove the tests themselves right. Tests marked `fleetcore_only` are skipped in that mode.
"""

from __future__ import annotations

import atexit
import configparser
import faulthandler
import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import mqttwire as w
import pki
from brokers import ALL_BROKERS, FLEETCORE_BIN, MODE, Broker
from clients import V5, V311, Client

TEST_TIMEOUT = float(os.environ.get("FLEETCORE_TEST_TIMEOUT", "180"))
VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "timeout_seconds(n): this test may run up to n seconds (default FLEETCORE_TEST_TIMEOUT)")
    config.addinivalue_line(
        "markers",
        "fleetcore_only(reason): fleetcore contract beyond the MQTT spec (or a place where "
        "Mosquitto deviates); skipped with FLEETCORE_TEST_BROKER=mosquitto")


def pytest_report_header(config):
    what = f"binary {FLEETCORE_BIN}" if MODE == "fleetcore" else "mosquitto (anchor mode)"
    return f"broker under test: {MODE} - {what}"


def pytest_collection_modifyitems(config, items):
    if MODE not in ("fleetcore", "mosquitto"):
        raise pytest.UsageError(f"FLEETCORE_TEST_BROKER must be fleetcore or mosquitto, not {MODE!r}")
    if MODE != "mosquitto":
        return
    for item in items:
        m = item.get_closest_marker("fleetcore_only")
        if m is not None:
            why = m.args[0] if m.args else m.kwargs.get("reason", "fleetcore contract")
            item.add_marker(pytest.mark.skip(reason=f"fleetcore only: {why}"))


# ---------------------------------------------------------------------------------------------
# brokers

@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """The broker shared by most tests (anonymous plain TCP allowed). Tests keep out of each
    other's way with unique topics and client ids (the `uid` fixture)."""
    b = Broker(tmp_path_factory.mktemp("shared-broker"), name="shared")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def broker_factory(tmp_path):
    """Start a broker of one's own: broker_factory("--max-packet-size", "1024", allow_anonymous=
    False, env={...}, config_toml="...", start=False). Stopped (SIGTERM) at teardown."""
    made: list[Broker] = []

    def make(*extra_args, start: bool = True, allow_anonymous: bool = True, env=None,
             config_toml: str | None = None, listener_flags: bool = True,
             data_dir_flag: bool = True) -> Broker:
        b = Broker(tmp_path / f"broker{len(made)}", extra_args, allow_anonymous=allow_anonymous,
                   env=env, config_toml=config_toml, listener_flags=listener_flags,
                   data_dir_flag=data_dir_flag, name=f"own{len(made)}")
        if MODE == "mosquitto":
            unsupported = b.unsupported_in_mosquitto()
            if unsupported or env or config_toml is not None:
                pytest.skip(f"no Mosquitto equivalent for {unsupported or 'fleetcore config/env'}")
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in made:
        b.stop(timeout=10)


@pytest.fixture
def fresh_broker(broker_factory):
    """A broker of the test's own, default settings (for restarts and global state)."""
    return broker_factory()


# ---------------------------------------------------------------------------------------------
# clients

_uids = itertools.count(1)
_RUN = secrets.token_hex(2)


@pytest.fixture
def uid(request) -> str:
    """A short id unique to this test (and this run): use it in topics and client ids."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:24].strip("-")
    return f"{name}-{_RUN}{next(_uids)}"


@pytest.fixture
def clients(broker):
    """Factory of paho clients: clients(V5, client_id=..., broker=other, connect=True, **Client
    kwargs). Connected unless connect=False; closed at teardown."""
    made: list[Client] = []

    def make(version: int = V5, connect: bool = True, broker=broker, **kw) -> Client:
        c = Client(broker, version, **kw)
        made.append(c)
        if connect:
            c.connect()
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def raw(broker):
    """Factory of raw-socket MQTT connections: raw(version, broker=..., port=...)."""
    made: list[w.RawClient] = []

    def make(version: int = V311, broker=broker, port: int | None = None, timeout: float = 5.0):
        rc = w.RawClient(broker.host, port or broker.ports["mqtt"], version, timeout)
        made.append(rc)
        return rc

    yield make
    for rc in made:
        rc.close()


# A policy that allows every IoT action on every resource: the MQTT tests are about the protocol,
# not about policies (test_access.py is), so their certificates get this one.
ALLOW_ALL_POLICY = "test-allow-all"
ALLOW_ALL_DOCUMENT = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]})


def register_device_certificate(b: Broker, cert_pem: Path, policy: str | None = ALLOW_ALL_POLICY) -> str | None:
    """Registers a certificate signed by the broker's CA (RegisterCertificateWithoutCA, ACTIVE)
    and attaches `policy` (the allow-all test policy by default), as an operator would before a
    device may connect over mTLS. Returns the certificate ARN; a no-op against Mosquitto."""
    if MODE != "fleetcore":
        return None
    import boto3
    from botocore.config import Config
    key, secret = admin_credentials(b)
    iot = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                region_name=AWS_REGION).client(
        "iot", endpoint_url=b.http_base, config=Config(retries={"mode": "standard", "max_attempts": 1}))
    if policy == ALLOW_ALL_POLICY:
        try:
            iot.create_policy(policyName=ALLOW_ALL_POLICY, policyDocument=ALLOW_ALL_DOCUMENT)
        except iot.exceptions.ResourceAlreadyExistsException:
            pass
    arn = iot.register_certificate_without_ca(certificatePem=Path(cert_pem).read_text(),
                                              status="ACTIVE")["certificateArn"]
    if policy:
        iot.attach_policy(policyName=policy, target=arn)
    return arn


@pytest.fixture
def client_cert(tmp_path):
    """client_cert(broker, cn, register=True) -> (cert.pem, key.pem) signed by that broker's CA
    and, against fleetcore, registered ACTIVE with the allow-all test policy attached."""
    def make(b: Broker, cn: str, register: bool = True):
        cert, key = pki.make_client_cert(b.ca_pem, b.ca_key, cn, tmp_path / "client-certs")
        if register:
            register_device_certificate(b, cert)
        return cert, key
    return make


# ---------------------------------------------------------------------------------------------
# AWS clients against the control plane (fleetcore only: Mosquitto has none)

AWS_REGION = "us-east-1"


def _need_control_plane():
    if MODE != "fleetcore":
        pytest.skip("the AWS-compatible control plane is fleetcore's")


def admin_credentials(b: Broker) -> tuple[str, str]:
    """(access key id, secret) of profile `fleetcore` in the broker's `<data dir>/credentials`."""
    cp = configparser.ConfigParser()
    cp.read(b.data_dir / "credentials")
    return cp["fleetcore"]["aws_access_key_id"], cp["fleetcore"]["aws_secret_access_key"]


@pytest.fixture
def aws(request):
    """Factory of boto3 clients signed with the broker's admin credentials: aws("iot",
    broker=other, region=..., access_key_id=..., secret_access_key=..., **botocore Config kwargs).
    No retries, so a refused request fails at once."""
    _need_control_plane()
    import boto3
    from botocore.config import Config

    default_broker = request.getfixturevalue("broker")

    def make(service: str, broker: Broker | None = None, region: str = AWS_REGION,
             access_key_id: str | None = None, secret_access_key: str | None = None, **config):
        b = broker or default_broker
        key, secret = admin_credentials(b)
        session = boto3.session.Session(
            aws_access_key_id=access_key_id or key,
            aws_secret_access_key=secret_access_key or secret,
            region_name=region)
        cfg = {"retries": {"mode": "standard", "max_attempts": 1}, "connect_timeout": 5,
               "read_timeout": 30, **config}
        return session.client(service, endpoint_url=b.http_base, config=Config(**cfg))

    return make


@pytest.fixture
def aws_cli(request):
    """Runs the aws CLI against the broker: aws_cli("iot", "describe-endpoint", broker=other,
    check=True, env={...}). Credentials come from the broker's credentials file (profile
    fleetcore), as a user would set them up. Returns the parsed JSON output (None when empty), or
    with check=False the CompletedProcess."""
    _need_control_plane()
    exe = Path(sys.executable).parent / "aws"
    if not exe.exists():
        exe = Path(shutil.which("aws") or exe)
    default_broker = request.getfixturevalue("broker")

    def run(*args, broker: Broker | None = None, check: bool = True, env=None, timeout: float = 60):
        b = broker or default_broker
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        child_env.update({
            "AWS_SHARED_CREDENTIALS_FILE": str(b.data_dir / "credentials"),
            "AWS_PROFILE": "fleetcore",
            "AWS_DEFAULT_REGION": AWS_REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
            "AWS_RETRY_MODE": "standard",
            "AWS_MAX_ATTEMPTS": "1",
        })
        child_env.update(env or {})
        cmd = [str(exe), "--endpoint-url", b.http_base, *map(str, args), "--output", "json"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env)
        if not check:
            return done
        assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}\n{done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None

    return run


# ---------------------------------------------------------------------------------------------
# the broker log on failure, and a watchdog so a hung test cannot hang CI

@pytest.fixture(autouse=True)
def _broker_log_marks(request):
    request.node._broker_marks = {id(b): b.log_size() for b in ALL_BROKERS}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    marks = getattr(item, "_broker_marks", {})
    for b in ALL_BROKERS:
        since = marks.get(id(b), 0)
        if b.log_size() > since:
            rep.sections.append((f"{b.kind} log ({b.name}, {b.log_path})", b.log_tail(300, since)))


def _kill_all_brokers():
    for b in ALL_BROKERS:
        try:
            b.kill()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_kill_all_brokers)


@pytest.fixture(autouse=True)
def _watchdog(request):
    def fire():
        sys.stderr.write(f"\n\n*** {request.node.nodeid} exceeded its time limit; aborting the run ***\n")
        faulthandler.dump_traceback(all_threads=True)
        for b in ALL_BROKERS:
            sys.stderr.write(f"--- {b.kind} log ({b.name}) ---\n{b.log_tail(80)}\n")
        sys.stderr.flush()
        _kill_all_brokers()
        os._exit(3)

    longer = request.node.get_closest_marker("timeout_seconds")
    t = threading.Timer(max(TEST_TIMEOUT, longer.args[0]) if longer else TEST_TIMEOUT, fire)
    t.daemon = True
    t.start()
    yield
    t.cancel()


# ---------------------------------------------------------------------------------------------
# moto in server mode: the S3-compatible lake of the archive and analytics tests

@pytest.fixture
def moto(tmp_path):
    """moto_server on a free loopback port; .start()/.stop() to simulate an outage (moto keeps
    its state in memory: a restarted moto has no bucket until one is created again); .s3() is a
    boto3 S3 client of it; .lake_env are the server's settings that make it the lake."""
    from brokers import HOST, free_port, port_open, wait_until
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.skip("moto_server is not installed in the venv (test.sh installs moto[server])")

    class Moto:
        port = free_port()
        proc = None
        url = f"http://{HOST}:{port}"
        lake_env = {"FLEETCORE_LAKE_ENDPOINT": url, "FLEETCORE_LAKE_ACCESS_KEY_ID": "moto",
                    "FLEETCORE_LAKE_SECRET_ACCESS_KEY": "moto"}

        def start(self):
            log = open(tmp_path / "moto.log", "ab")
            self.proc = subprocess.Popen([str(exe), "-H", HOST, "-p", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT)
            wait_until(lambda: port_open(self.port), 30, what="moto_server up")

        def stop(self):
            if self.proc and self.proc.poll() is None:
                self.proc.terminate()
                self.proc.wait(10)

        def s3(self):
            import boto3
            from botocore.config import Config
            return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                                aws_access_key_id="moto", aws_secret_access_key="moto",
                                config=Config(s3={"addressing_style": "path"},
                                              retries={"max_attempts": 1}))

    m = Moto()
    m.start()
    yield m
    m.stop()


# ---------------------------------------------------------------------------------------------
# nats-server for the JetStream stream backend

@pytest.fixture
def nats_server(tmp_path):
    """nats_server(max_payload=2 MiB) -> a started private nats-server with JetStream (see
    natsserver.py); stopped at teardown. Fails, never skips, when nats-server is missing."""
    from natsserver import NatsServer
    made: list[NatsServer] = []

    def make(**kw) -> NatsServer:
        n = NatsServer(tmp_path / f"nats{len(made)}", **kw)
        made.append(n)
        return n.start()

    yield make
    for n in made:
        n.stop()


# ---------------------------------------------------------------------------------------------
# PostgreSQL for the scale-out state backend

@pytest.fixture(scope="session")
def postgres_server():
    """One private PostgreSQL for the session (see pgserver.py); tests take a database each with
    `postgres_server.database(name)`. Skipped, saying why, where PostgreSQL is not installed."""
    from pgserver import PostgresServer, find_bin_dir
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; "
                    "test.sh installs the postgresql package)")
    server = PostgresServer(bin_dir).start()
    yield server
    server.stop()
