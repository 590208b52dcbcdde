"""Fixtures for the whole-system tests: the real broker binary on free loopback ports with a temp
data dir, clients bound to it, and the broker's log printed when a test fails.

FLEETCORE_TEST_BROKER=mosquitto runs the generic MQTT tests against Mosquitto instead (same
listeners: plain, websockets, TLS and WSS with required client certificates; persistence on), to
prove the tests themselves right. Tests marked `fleetcore_only` are skipped in that mode.
"""

from __future__ import annotations

import atexit
import faulthandler
import itertools
import os
import re
import secrets
import sys
import threading

import pytest

import mqttwire as w
import pki
from brokers import ALL_BROKERS, FLEETCORE_BIN, MODE, Broker
from clients import V5, V311, Client

TEST_TIMEOUT = float(os.environ.get("FLEETCORE_TEST_TIMEOUT", "180"))
VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


def pytest_configure(config):
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


@pytest.fixture
def client_cert(tmp_path):
    """client_cert(broker, cn) -> (cert.pem, key.pem) signed by that broker's CA."""
    def make(b: Broker, cn: str):
        return pki.make_client_cert(b.ca_pem, b.ca_key, cn, tmp_path / "client-certs")
    return make


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
        sys.stderr.write(f"\n\n*** {request.node.nodeid} exceeded {TEST_TIMEOUT}s; aborting the run ***\n")
        faulthandler.dump_traceback(all_threads=True)
        for b in ALL_BROKERS:
            sys.stderr.write(f"--- {b.kind} log ({b.name}) ---\n{b.log_tail(80)}\n")
        sys.stderr.flush()
        _kill_all_brokers()
        os._exit(3)

    t = threading.Timer(TEST_TIMEOUT, fire)
    t.daemon = True
    t.start()
    yield
    t.cancel()
