"""The command-line conveniences over the control plane, run as a user runs them:
`fleetcore thing create NAME [--type T] [--attr k=v]...` prints the thing ARN, and
`fleetcore cert issue --thing NAME --out DIR [--policy P]` writes cert.pem, private.key (0600) and
ca.pem and prints a `mosquitto_pub` line that works when run exactly as printed. Errors (unknown
thing, type or policy, server down, wrong credentials) exit non-zero with a message naming the
AWS error code, and leave nothing half made."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from brokers import FLEETCORE_BIN, free_port, have_mosquitto_clients
from clients import V5
from conftest import admin_credentials

pytestmark = pytest.mark.fleetcore_only("fleetcore's own command-line tools")

ARN = "arn:aws:iot:us-east-1:000000000000"
REFERENCE = """{"Version": "2012-10-17", "Statement": [
 {"Effect": "Allow", "Action": "iot:Connect",
  "Resource": "arn:aws:iot:us-east-1:000000000000:client/${iot:Connection.Thing.ThingName}"},
 {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
  "Resource": "arn:aws:iot:us-east-1:000000000000:topic/devices/${iot:Connection.Thing.ThingName}/*"},
 {"Effect": "Allow", "Action": "iot:Subscribe",
  "Resource": "arn:aws:iot:us-east-1:000000000000:topicfilter/devices/${iot:Connection.Thing.ThingName}/#"}]}"""

need_mosquitto_pub = pytest.mark.skipif(not have_mosquitto_clients(),
                                        reason="mosquitto_pub not installed")


def run(args, env: dict | None = None, cwd=None, timeout: float = 30) -> subprocess.CompletedProcess:
    """`fleetcore ARGS` with no FLEETCORE_* variables from the outside but those in `env`."""
    child = {k: v for k, v in os.environ.items()
             if not k.startswith(("FLEETCORE_", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE"))}
    child["NO_COLOR"] = "1"
    child.update(env or {})
    return subprocess.run([str(FLEETCORE_BIN), *map(str, args)], capture_output=True, text=True,
                          env=child, cwd=cwd, timeout=timeout)


def endpoint(b) -> list[str]:
    return ["--endpoint", f"127.0.0.1:{b.ports['http']}", "--data-dir", str(b.data_dir)]


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def failed(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exited non-zero, printed nothing on stdout, and said every needle on stderr."""
    text = done.stderr
    assert done.returncode != 0, f"succeeded:\nstdout:\n{done.stdout}\nstderr:\n{text}"
    assert "panicked" not in text and "RUST_BACKTRACE" not in text, text
    assert done.stdout.strip() == "", f"stdout on failure: {done.stdout!r}"
    for n in needles:
        assert n in text, f"{n!r} not in the error output:\n{text}"
    return text


@pytest.fixture
def iot(aws):
    return aws("iot")


def dead_endpoint() -> str:
    """A loopback address nothing listens on."""
    return f"127.0.0.1:{free_port()}"


# =============================================================================================
# thing create

def test_thing_create_prints_the_arn(broker, iot, uid):
    out = ok(run(["thing", "create", uid, *endpoint(broker)]))
    assert out == f"{ARN}:thing/{uid}\n"
    d = iot.describe_thing(thingName=uid)
    assert d["thingArn"] == f"{ARN}:thing/{uid}"
    assert "thingTypeName" not in d
    assert d.get("attributes", {}) == {}


def test_thing_create_with_type_and_attributes(broker, iot, uid):
    iot.create_thing_type(thingTypeName=f"{uid}-type")
    out = ok(run(["thing", "create", uid, "--type", f"{uid}-type", "--attr", "site=plant-7",
                  "--attr", "expr=a=b", *endpoint(broker)]))
    assert out == f"{ARN}:thing/{uid}\n"
    d = iot.describe_thing(thingName=uid)
    assert d["thingTypeName"] == f"{uid}-type"
    assert d["attributes"] == {"site": "plant-7", "expr": "a=b"}


def test_thing_create_reads_endpoint_and_data_dir_from_the_environment(broker, iot, uid):
    out = ok(run(["thing", "create", uid], env={
        "FLEETCORE_ENDPOINT": f"127.0.0.1:{broker.ports['http']}",
        "FLEETCORE_DATA_DIR": str(broker.data_dir)}))
    assert out == f"{ARN}:thing/{uid}\n"
    assert iot.describe_thing(thingName=uid)["thingName"] == uid


def test_thing_create_errors(broker, iot, uid, tmp_path):
    ok(run(["thing", "create", uid, *endpoint(broker)]))
    # the same again is fine (CreateThing is idempotent, as AWS); with another configuration not
    ok(run(["thing", "create", uid, *endpoint(broker)]))
    failed(run(["thing", "create", uid, "--attr", "site=elsewhere", *endpoint(broker)]),
           "ResourceAlreadyExistsException", uid)
    failed(run(["thing", "create", f"{uid}-typed", "--type", f"{uid}-no-such-type",
                *endpoint(broker)]), "ResourceNotFoundException")
    failed(run(["thing", "create", "has space", *endpoint(broker)]), "InvalidRequestException")
    failed(run(["thing", "create", f"{uid}-attr", "--attr", "nokey", *endpoint(broker)]), "--attr", "nokey")
    failed(run(["thing", "create", f"{uid}-attr", "--attr", "=v", *endpoint(broker)]), "--attr")
    for name in (f"{uid}-typed", f"{uid}-attr"):
        with pytest.raises(iot.exceptions.ResourceNotFoundException):
            iot.describe_thing(thingName=name)

    # the server is down
    text = failed(run(["thing", "create", f"{uid}-down", "--endpoint", dead_endpoint(),
                       "--data-dir", str(broker.data_dir)]))
    assert "connecting to the fleetcore server" in text and "running" in text, text

    # wrong credentials through the environment
    key, secret = admin_credentials(broker)
    failed(run(["thing", "create", f"{uid}-cred", *endpoint(broker)], env={
        "FLEETCORE_ACCESS_KEY_ID": "AKIANOTAREALKEY00000", "FLEETCORE_SECRET_ACCESS_KEY": secret}),
        "UnrecognizedClientException", "403")
    failed(run(["thing", "create", f"{uid}-cred", *endpoint(broker)], env={
        "FLEETCORE_ACCESS_KEY_ID": key, "FLEETCORE_SECRET_ACCESS_KEY": secret + "x"}),
        "InvalidSignatureException", "403")
    # a data dir without a credentials file
    failed(run(["thing", "create", f"{uid}-cred", "--endpoint", f"127.0.0.1:{broker.ports['http']}",
                "--data-dir", str(tmp_path / "nowhere")]), "credentials")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=f"{uid}-cred")
    # and the right ones through the environment work, without a data dir
    out = ok(run(["thing", "create", f"{uid}-env", "--endpoint", f"127.0.0.1:{broker.ports['http']}",
                  "--data-dir", str(tmp_path / "nowhere")],
                 env={"FLEETCORE_ACCESS_KEY_ID": key, "FLEETCORE_SECRET_ACCESS_KEY": secret}))
    assert out == f"{ARN}:thing/{uid}-env\n"


# =============================================================================================
# cert issue

def issue(broker, thing: str, out_dir, policy: str | None = None, cwd=None, env=None,
          port: bool = True) -> subprocess.CompletedProcess:
    args = ["cert", "issue", "--thing", thing, "--out", out_dir]
    if policy:
        args += ["--policy", policy]
    if port:
        args += ["--mqtts-port", str(broker.ports["mqtts"])]
    return run([*args, *endpoint(broker)], cwd=cwd, env=env)


def printed_command(stdout: str) -> str:
    """The example command exactly as printed after `try:` (shell line continuations joined)."""
    lines = stdout.splitlines()
    assert "try:" in [ln.strip() for ln in lines], stdout
    start = [ln.strip() for ln in lines].index("try:") + 1
    return "\n".join(lines[start:]).strip()


def run_printed(command: str, cwd=None) -> subprocess.CompletedProcess:
    """Runs the printed command as a POSIX shell would parse it (shlex), substituting nothing."""
    argv = shlex.split(command.replace("\\\n", " "))  # a shell's line continuation
    assert argv[0] == "mosquitto_pub", argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd)


def cert_ids(iot) -> set[str]:
    ids, marker = set(), None
    while True:
        page = iot.list_certificates(pageSize=250, **({"marker": marker} if marker else {}))
        ids |= {c["certificateId"] for c in page["certificates"]}
        marker = page.get("nextMarker")
        if not marker:
            return ids


@need_mosquitto_pub
def test_cert_issue_writes_the_files_and_a_working_mosquitto_pub_line(broker, iot, clients, tmp_path, uid):
    ok(run(["thing", "create", uid, *endpoint(broker)]))
    iot.create_policy(policyName=uid, policyDocument=REFERENCE)
    out_dir = tmp_path / "device"
    stdout = ok(issue(broker, uid, out_dir, policy=uid))

    # what it printed
    lines = stdout.splitlines()
    assert lines[0].startswith("certificate arn:aws:iot:us-east-1:000000000000:cert/"), stdout
    arn = lines[0].split()[1]
    cert_id = arn.rsplit("/", 1)[1]
    assert lines[1].split() == ["files", f"{out_dir}/cert.pem", f"{out_dir}/private.key",
                                f"{out_dir}/ca.pem"], stdout
    command = printed_command(stdout)
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[0] == "mosquitto_pub"
    for flag, value in (("--cafile", f"{out_dir}/ca.pem"), ("--cert", f"{out_dir}/cert.pem"),
                        ("--key", f"{out_dir}/private.key"), ("-p", str(broker.ports["mqtts"])),
                        ("-i", uid), ("-t", f"devices/{uid}/telemetry")):
        assert argv[argv.index(flag) + 1] == value, (flag, argv)

    # the files
    cert_pem = (out_dir / "cert.pem").read_text()
    key_path = out_dir / "private.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600, oct(key_path.stat().st_mode)
    assert (out_dir / "ca.pem").read_bytes() == broker.ca_pem.read_bytes()
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(broker.ca_pem.read_bytes()))
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)

    # what it made on the server
    d = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    assert (d["certificateArn"], d["status"], d["certificatePem"]) == (arn, "ACTIVE", cert_pem)
    assert iot.list_thing_principals(thingName=uid)["principals"] == [arn]
    assert [p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"]] == [uid]

    # the printed line, run as printed, publishes
    watcher = clients(V5)
    assert watcher.subscribe(f"devices/{uid}/#", qos=1) == [1]
    done = run_printed(command)
    assert done.returncode == 0, f"the printed command failed:\n{command}\n{done.stdout}{done.stderr}"
    msg = watcher.wait_message(topic=f"devices/{uid}/telemetry")
    assert msg.payload == b'{"temperature": 21}'


@need_mosquitto_pub
def test_cert_issue_relative_out_dir_line_works_from_there(broker, iot, clients, tmp_path, uid):
    ok(run(["thing", "create", uid, *endpoint(broker)]))
    iot.create_policy(policyName=uid, policyDocument=REFERENCE)
    stdout = ok(issue(broker, uid, "certs/dev", policy=uid, cwd=tmp_path))
    assert (tmp_path / "certs" / "dev" / "cert.pem").exists()
    watcher = clients(V5)
    assert watcher.subscribe(f"devices/{uid}/#", qos=1) == [1]
    command = printed_command(stdout)
    done = run_printed(command, cwd=tmp_path)
    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
    assert watcher.wait_message(topic=f"devices/{uid}/telemetry").payload == b'{"temperature": 21}'


@need_mosquitto_pub
def test_cert_issue_line_works_with_a_space_in_the_out_dir(broker, iot, clients, tmp_path, uid):
    ok(run(["thing", "create", uid, *endpoint(broker)]))
    iot.create_policy(policyName=uid, policyDocument=REFERENCE)
    out_dir = tmp_path / "my devices" / uid
    stdout = ok(issue(broker, uid, out_dir, policy=uid))
    assert (out_dir / "private.key").exists()
    watcher = clients(V5)
    assert watcher.subscribe(f"devices/{uid}/#", qos=1) == [1]
    command = printed_command(stdout)
    done = run_printed(command)
    assert done.returncode == 0, f"the printed command failed:\n{command}\n{done.stdout}{done.stderr}"
    assert watcher.wait_message(topic=f"devices/{uid}/telemetry").payload == b'{"temperature": 21}'


def test_cert_issue_without_policy_and_default_port(broker, iot, tmp_path, uid):
    ok(run(["thing", "create", uid, *endpoint(broker)]))
    out_dir = tmp_path / "nopolicy"
    stdout = ok(issue(broker, uid, out_dir, port=False))
    arn = stdout.splitlines()[0].split()[1]
    assert iot.list_attached_policies(target=arn)["policies"] == []
    assert iot.list_thing_principals(thingName=uid)["principals"] == [arn]
    argv = shlex.split(printed_command(stdout).replace("\\\n", " "))
    assert argv[argv.index("-p") + 1] == "8883"
    for name in ("cert.pem", "private.key", "ca.pem"):
        assert (out_dir / name).is_file(), name
    assert stat.S_IMODE((out_dir / "private.key").stat().st_mode) == 0o600


def test_cert_issue_key_is_0600_even_over_an_existing_file(broker, tmp_path, uid):
    """Issuing again into a folder whose private.key is world-readable (copied around, say):
    the new key must not inherit those permissions."""
    ok(run(["thing", "create", uid, *endpoint(broker)]))
    out_dir = tmp_path / "again"
    out_dir.mkdir()
    (out_dir / "private.key").write_text("old key")
    os.chmod(out_dir / "private.key", 0o644)
    ok(issue(broker, uid, out_dir))
    mode = stat.S_IMODE((out_dir / "private.key").stat().st_mode)
    assert mode == 0o600, f"private.key left at {oct(mode)}"
    assert "PRIVATE KEY" in (out_dir / "private.key").read_text()


def test_cert_issue_errors_leave_nothing_behind(broker, iot, tmp_path, uid):
    ok(run(["thing", "create", uid, *endpoint(broker)]))
    before = cert_ids(iot)
    out_dir = tmp_path / "never"

    failed(issue(broker, f"{uid}-missing", out_dir), "ResourceNotFoundException", f"{uid}-missing")
    failed(issue(broker, uid, out_dir, policy=f"{uid}-no-policy"), "ResourceNotFoundException",
           f"{uid}-no-policy")
    text = failed(run(["cert", "issue", "--thing", uid, "--out", out_dir, "--endpoint", dead_endpoint(),
                       "--data-dir", str(broker.data_dir)]))
    assert "connecting to the fleetcore server" in text and "running" in text, text
    key, secret = admin_credentials(broker)
    failed(issue(broker, uid, out_dir, env={"FLEETCORE_ACCESS_KEY_ID": "AKIANOTAREALKEY00000",
                                            "FLEETCORE_SECRET_ACCESS_KEY": secret}),
           "UnrecognizedClientException")
    failed(issue(broker, uid, out_dir, env={"FLEETCORE_ACCESS_KEY_ID": key,
                                            "FLEETCORE_SECRET_ACCESS_KEY": "wrong"}),
           "InvalidSignatureException")

    assert not out_dir.exists(), sorted(p.name for p in out_dir.iterdir())
    assert cert_ids(iot) == before, "a failed `cert issue` left a certificate behind"
    assert iot.list_thing_principals(thingName=uid)["principals"] == []


def test_cli_help_names_the_commands():
    for args, needles in ((["thing", "create", "--help"], ["--type", "--attr", "--endpoint", "--data-dir"]),
                          (["cert", "issue", "--help"], ["--thing", "--out", "--policy", "--mqtts-port"])):
        out = ok(run(args))
        for n in needles:
            assert n in out, (args, n)


@need_mosquitto_pub
@pytest.mark.parametrize("own_ca", [False, True], ids=["builtin-ca-only", "with-a-registered-ca"])
def test_cert_issue_away_from_the_data_dir(broker_factory, aws, clients, tmp_path, uid, own_ca):
    """Run where the server's data folder is not (credentials from the environment): ca.pem must
    still be the CA that verifies the server, so the printed line works."""
    b = broker_factory()
    iot = aws("iot", broker=b)
    iot.create_policy(policyName=uid, policyDocument=REFERENCE)
    iot.create_thing(thingName=uid)
    if own_ca:
        from test_access import OwnCa
        iot.register_ca_certificate(caCertificate=OwnCa(f"operator CA {uid}").pem, setAsActive=True)
    key, secret = admin_credentials(b)
    out_dir = tmp_path / "remote"
    done = run(["cert", "issue", "--thing", uid, "--out", out_dir, "--policy", uid,
                "--mqtts-port", str(b.ports["mqtts"]), "--endpoint", f"127.0.0.1:{b.ports['http']}",
                "--data-dir", str(tmp_path / "not-the-server")],
               env={"FLEETCORE_ACCESS_KEY_ID": key, "FLEETCORE_SECRET_ACCESS_KEY": secret})
    if done.returncode != 0:
        left = iot.list_thing_principals(thingName=uid)["principals"]
        raise AssertionError(f"exit {done.returncode}: {done.stderr.strip()}\n"
                             f"(and certificates left attached to the thing: {left})")
    stdout = ok(done)
    assert (out_dir / "ca.pem").read_bytes() == b.ca_pem.read_bytes(), \
        "ca.pem is not the CA of the server's certificate"
    watcher = clients(V5, broker=b)
    assert watcher.subscribe(f"devices/{uid}/#", qos=1) == [1]
    command = printed_command(stdout)
    result = run_printed(command)
    assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
    assert watcher.wait_message(topic=f"devices/{uid}/telemetry").payload == b'{"temperature": 21}'
