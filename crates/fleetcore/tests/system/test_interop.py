"""Interop with the Mosquitto command-line clients (Debian mosquitto-clients): pub/sub, retained,
QoS 2 (with its PUBREC/PUBREL/PUBCOMP exchange seen in the clients' debug output) and mTLS, at
-V mqttv311 and -V mqttv5."""

import subprocess
import threading
import time

import pytest

from brokers import have_mosquitto_clients

pytestmark = pytest.mark.skipif(not have_mosquitto_clients(),
                                reason="mosquitto_pub/mosquitto_sub not installed (test.sh installs them)")

CLI_VERSIONS = [pytest.param("mqttv311", id="v311"), pytest.param("mqttv5", id="v5")]
FMT = "MSG|%r|%q|%t|%p"


class Sub:
    """mosquitto_sub in the background; its output lines collected as they come."""

    def __init__(self, args: list[str]):
        # stdbuf: line-buffered stdout, so the debug lines (SUBACK) arrive as they happen
        self.proc = subprocess.Popen(["stdbuf", "-oL", "mosquitto_sub", "-d", "-F", FMT, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.cv = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_line(self, pred, timeout=15.0, what="line"):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for ln in self.lines:
                    if pred(ln):
                        return ln
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.t.is_alive()):
                    raise AssertionError(f"mosquitto_sub: no {what} within {timeout}s; output:\n" + "\n".join(self.lines))
                self.cv.wait(min(left, 0.2))

    def wait_subscribed(self):
        self.wait_line(lambda ln: "received SUBACK" in ln, what="SUBACK")

    def messages(self):
        with self.cv:
            return [ln.split("|", 4)[1:] for ln in self.lines if ln.startswith("MSG|")]

    def wait_exit(self, timeout=20.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("mosquitto_sub did not exit; output:\n" + "\n".join(self.lines))
        self.t.join(5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def subs():
    made: list[Sub] = []

    def make(args):
        s = Sub(args)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


def pub(args: list[str], timeout=20) -> str:
    out = subprocess.run(["mosquitto_pub", "-d", *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"mosquitto_pub failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def conn(broker, version, cid):
    return ["-h", "127.0.0.1", "-p", str(broker.ports["mqtt"]), "-V", version, "-i", cid]


@pytest.mark.parametrize("version", CLI_VERSIONS)
def test_cli_pub_sub(broker, subs, uid, version):
    t = f"cli/{uid}"
    s = subs([*conn(broker, version, f"sub-{uid}"), "-t", f"{t}/#", "-q", "1", "-C", "3", "-W", "20"])
    s.wait_subscribed()
    for i, qos in enumerate((0, 1, 1)):
        pub([*conn(broker, version, f"pub-{uid}-{i}"), "-t", f"{t}/{i}", "-q", str(qos), "-m", f"hello {i}"])
    assert s.wait_exit() == 0
    assert s.messages() == [["0", str(q), f"{t}/{i}", f"hello {i}"] for i, q in enumerate((0, 1, 1))]


@pytest.mark.parametrize("version", CLI_VERSIONS)
def test_cli_retained(broker, subs, uid, version):
    t = f"cli/{uid}/state"
    pub([*conn(broker, version, f"pub-{uid}"), "-t", t, "-q", "1", "-r", "-m", "retained-value"])
    s = subs([*conn(broker, version, f"sub-{uid}"), "-t", t, "-q", "1", "-C", "1", "-W", "20"])
    assert s.wait_exit() == 0
    assert s.messages() == [["1", "1", t, "retained-value"]]
    # clear it; a new subscriber with --retained-only then times out with nothing
    pub([*conn(broker, version, f"pub2-{uid}"), "-t", t, "-q", "1", "-r", "-n"])
    s2 = subs([*conn(broker, version, f"sub2-{uid}"), "-t", t, "-q", "1", "-W", "2", "--retained-only"])
    s2.wait_exit()
    assert s2.messages() == []


@pytest.mark.parametrize("version", CLI_VERSIONS)
def test_cli_qos2(broker, subs, uid, version):
    t = f"cli/{uid}/q2"
    s = subs([*conn(broker, version, f"sub-{uid}"), "-t", t, "-q", "2", "-C", "2", "-W", "20"])
    s.wait_subscribed()
    out = pub([*conn(broker, version, f"pub-{uid}"), "-t", t, "-q", "2", "-m", "exactly-once"])
    for step in ("sending PUBLISH (d0, q2", "received PUBREC", "sending PUBREL", "received PUBCOMP"):
        assert step in out, f"mosquitto_pub output lacks {step!r}:\n{out}"
    pub([*conn(broker, version, f"pub2-{uid}"), "-t", t, "-q", "2", "-m", "second"])
    assert s.wait_exit() == 0
    assert s.messages() == [["0", "2", t, "exactly-once"], ["0", "2", t, "second"]]
    text = "\n".join(s.lines)
    for step in ("received PUBLISH (d0, q2", "sending PUBREC", "received PUBREL", "sending PUBCOMP"):
        assert step in text, f"mosquitto_sub output lacks {step!r}:\n{text}"


@pytest.mark.parametrize("version", CLI_VERSIONS)
def test_cli_mtls(broker, subs, client_cert, uid, version):
    t = f"cli/{uid}/tls"
    scert, skey = client_cert(broker, f"cli-sub-{uid}")
    pcert, pkey = client_cert(broker, f"cli-pub-{uid}")

    def tls(cert, key, cid):
        return ["-h", "127.0.0.1", "-p", str(broker.ports["mqtts"]), "-V", version, "-i", cid,
                "--cafile", str(broker.ca_pem), "--cert", str(cert), "--key", str(key)]

    s = subs([*tls(scert, skey, f"sub-{uid}"), "-t", t, "-q", "1", "-C", "1", "-W", "20"])
    s.wait_subscribed()
    pub([*tls(pcert, pkey, f"pub-{uid}"), "-t", t, "-q", "1", "-m", "over-mtls"])
    assert s.wait_exit() == 0
    assert s.messages() == [["0", "1", t, "over-mtls"]]


@pytest.mark.parametrize("version", CLI_VERSIONS)
def test_cli_mtls_without_certificate_fails(broker, uid, version):
    out = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.ports["mqtts"]),
                          "-V", version, "-i", f"nocert-{uid}", "--cafile", str(broker.ca_pem),
                          "-t", f"cli/{uid}", "-m", "x", "-q", "1"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0, f"published over mTLS without a client certificate:\n{out.stdout}{out.stderr}"
