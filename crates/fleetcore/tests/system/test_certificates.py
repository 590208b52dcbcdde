"""Certificates through unchanged AWS clients (boto3 and the aws CLI): issuing with the built-in CA
(CreateKeysAndCertificate, CreateCertificateFromCsr), bringing your own CA (RegisterCACertificate
with a verification certificate, RegisterCertificate chain checks, RegisterCertificateWithoutCA),
the ACTIVE / INACTIVE / REVOKED state machine, deletion rules, thing principals both ways,
marker paging, and persistence across a restart."""

import datetime as dt
import hashlib

import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.fleetcore_only("the AWS-compatible control plane")

ACCOUNT = "000000000000"
REGION = "us-east-1"


def cert_arn(cert_id: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/{cert_id}"


def error_of(exc: pytest.ExceptionInfo) -> tuple[str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def der_of(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------------------------
# a CA of the customer's own, made here

def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class OwnCa:
    """A self-signed CA and the leaves it signs, all in memory."""

    def __init__(self, cn: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(_name(cn)).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(hours=1))
            .not_valid_after(_now() + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()
        self.id = hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def leaf(self, cn: str, not_before=None, not_after=None) -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or _now() - dt.timedelta(hours=1))
            .not_valid_after(not_after or _now() + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM).decode()


# ---------------------------------------------------------------------------------------------
# issued by the built-in CA

def test_create_keys_and_certificate(aws, broker):
    iot = aws("iot")
    made = iot.create_keys_and_certificate(setAsActive=True)
    cert_id = made["certificateId"]
    assert cert_id == hashlib.sha256(der_of(made["certificatePem"])).hexdigest()
    assert made["certificateArn"] == cert_arn(cert_id)
    assert set(made["keyPair"]) == {"PublicKey", "PrivateKey"}

    # The certificate is the key pair's and chains to the broker's CA.
    cert = x509.load_pem_x509_certificate(made["certificatePem"].encode())
    ca = x509.load_pem_x509_certificate(broker.ca_pem.read_bytes())
    cert.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(made["keyPair"]["PrivateKey"].encode(), password=None)
    public = serialization.load_pem_public_key(made["keyPair"]["PublicKey"].encode())
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    assert public.public_bytes(*spki) == key.public_key().public_bytes(*spki)

    d = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    assert (d["certificateId"], d["certificateArn"], d["status"], d["ownedBy"]) == (
        cert_id, cert_arn(cert_id), "ACTIVE", ACCOUNT)
    assert d["certificatePem"] == made["certificatePem"]
    assert d["certificateMode"] == "DEFAULT"
    assert "caCertificateId" not in d
    assert d["validity"]["notBefore"] < d["creationDate"] < d["validity"]["notAfter"]
    assert d["lastModifiedDate"] >= d["creationDate"]

    # Without setAsActive: INACTIVE, as AWS.
    quiet = iot.create_keys_and_certificate()
    assert iot.describe_certificate(certificateId=quiet["certificateId"])[
        "certificateDescription"]["status"] == "INACTIVE"


def test_certificate_state_machine_and_deletion(aws):
    iot = aws("iot")
    cert_id = iot.create_keys_and_certificate(setAsActive=True)["certificateId"]

    def status():
        return iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"]

    with pytest.raises(ClientError) as exc:
        iot.delete_certificate(certificateId=cert_id)
    assert error_of(exc) == ("CertificateStateException", 406)

    iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
    assert status() == "INACTIVE"
    iot.update_certificate(certificateId=cert_id, newStatus="ACTIVE")
    assert status() == "ACTIVE"
    iot.update_certificate(certificateId=cert_id, newStatus="REVOKED")
    assert status() == "REVOKED"
    for again in ("ACTIVE", "INACTIVE"):
        with pytest.raises(ClientError) as exc:
            iot.update_certificate(certificateId=cert_id, newStatus=again)
        assert error_of(exc) == ("CertificateStateException", 406), again
    with pytest.raises(ClientError) as exc:
        iot.update_certificate(certificateId=cert_id, newStatus="PENDING_TRANSFER")
    assert error_of(exc) == ("InvalidRequestException", 400)
    assert status() == "REVOKED"

    iot.delete_certificate(certificateId=cert_id)
    for call in (lambda: iot.describe_certificate(certificateId=cert_id),
                 lambda: iot.delete_certificate(certificateId=cert_id),
                 lambda: iot.update_certificate(certificateId=cert_id, newStatus="ACTIVE")):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.describe_certificate(certificateId="z" * 64)
    assert error_of(exc) == ("InvalidRequestException", 400)


def test_create_certificate_from_csr(aws, broker):
    iot = aws("iot")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(_name("csr-device"))
           .sign(key, hashes.SHA256()))
    made = iot.create_certificate_from_csr(
        certificateSigningRequest=csr.public_bytes(serialization.Encoding.PEM).decode(),
        setAsActive=True)
    cert = x509.load_pem_x509_certificate(made["certificatePem"].encode())
    assert made["certificateId"] == hashlib.sha256(der_of(made["certificatePem"])).hexdigest()
    assert cert.subject == _name("csr-device")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(broker.ca_pem.read_bytes()))
    assert iot.describe_certificate(certificateId=made["certificateId"])[
        "certificateDescription"]["status"] == "ACTIVE"

    with pytest.raises(ClientError) as exc:
        iot.create_certificate_from_csr(certificateSigningRequest="not a CSR")
    assert error_of(exc) == ("InvalidRequestException", 400)


# ---------------------------------------------------------------------------------------------
# bring your own CA

def test_ca_registration_and_chain_validation(aws, uid):
    iot = aws("iot")
    own = OwnCa(f"customer CA {uid}")
    code = iot.get_registration_code()["registrationCode"]
    assert code == iot.get_registration_code()["registrationCode"]

    # Proof of possession: the verification certificate must carry the registration code.
    with pytest.raises(ClientError) as exc:
        iot.register_ca_certificate(caCertificate=own.pem,
                                    verificationCertificate=own.leaf("not the code"))
    assert error_of(exc) == ("RegistrationCodeValidationException", 400)
    with pytest.raises(ClientError) as exc:
        iot.register_ca_certificate(caCertificate=own.pem,
                                    verificationCertificate=OwnCa("other").leaf(code))
    assert error_of(exc) == ("CertificateValidationException", 400)
    with pytest.raises(ClientError) as exc:
        iot.register_ca_certificate(caCertificate=own.leaf("not a CA"))
    assert error_of(exc) == ("CertificateValidationException", 400)

    registered = iot.register_ca_certificate(caCertificate=own.pem,
                                             verificationCertificate=own.leaf(code),
                                             registrationConfig={"templateName": "jitp"})
    assert registered["certificateId"] == own.id
    assert registered["certificateArn"] == f"arn:aws:iot:{REGION}:{ACCOUNT}:cacert/{own.id}"
    with pytest.raises(ClientError) as exc:
        iot.register_ca_certificate(caCertificate=own.pem)
    assert error_of(exc) == ("ResourceAlreadyExistsException", 409)
    d = iot.describe_ca_certificate(certificateId=own.id)
    assert d["certificateDescription"]["status"] == "INACTIVE"
    assert d["certificateDescription"]["autoRegistrationStatus"] == "DISABLE"
    assert d["registrationConfig"] == {"templateName": "jitp"}

    device_pem = own.leaf("device-1")
    # The CA is registered but INACTIVE.
    with pytest.raises(ClientError) as exc:
        iot.register_certificate(certificatePem=device_pem, caCertificatePem=own.pem)
    assert error_of(exc) == ("CertificateStateException", 406)
    iot.update_ca_certificate(certificateId=own.id, newStatus="ACTIVE",
                              newAutoRegistrationStatus="ENABLE")
    d = iot.describe_ca_certificate(certificateId=own.id)["certificateDescription"]
    assert (d["status"], d["autoRegistrationStatus"]) == ("ACTIVE", "ENABLE")
    listed = iot.list_ca_certificates(templateName="jitp")["certificates"]
    assert own.id in [c["certificateId"] for c in listed]

    device = iot.register_certificate(certificatePem=device_pem, caCertificatePem=own.pem,
                                      status="ACTIVE")
    assert device["certificateId"] == hashlib.sha256(der_of(device_pem)).hexdigest()
    d = iot.describe_certificate(certificateId=device["certificateId"])["certificateDescription"]
    assert (d["status"], d["caCertificateId"], d["certificateMode"]) == ("ACTIVE", own.id, "DEFAULT")
    with pytest.raises(ClientError) as exc:
        iot.register_certificate(certificatePem=device_pem, caCertificatePem=own.pem)
    assert error_of(exc) == ("ResourceAlreadyExistsException", 409)
    assert exc.value.response["resourceId"] == device["certificateId"]

    # Without caCertificatePem the registered CA is found; setAsActive still works.
    second = iot.register_certificate(certificatePem=own.leaf("device-2"), setAsActive=True)
    assert iot.describe_certificate(certificateId=second["certificateId"])[
        "certificateDescription"]["status"] == "ACTIVE"
    by_ca = iot.list_certificates_by_ca(caCertificateId=own.id, ascendingOrder=True)["certificates"]
    assert [c["certificateId"] for c in by_ca] == [device["certificateId"], second["certificateId"]]

    stranger = OwnCa("unregistered CA")
    for kwargs in ({"certificatePem": stranger.leaf("x")},
                   {"certificatePem": stranger.leaf("x"), "caCertificatePem": own.pem},
                   {"certificatePem": stranger.leaf("x"), "caCertificatePem": stranger.pem},
                   {"certificatePem": own.leaf("old", _now() - dt.timedelta(days=3),
                                               _now() - dt.timedelta(days=1))},
                   {"certificatePem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}):
        with pytest.raises(ClientError) as exc:
            iot.register_certificate(**kwargs)
        assert error_of(exc) == ("CertificateValidationException", 400), kwargs

    # Without a CA: any valid certificate, SNI_ONLY.
    sni = iot.register_certificate_without_ca(certificatePem=stranger.leaf("sni"), status="ACTIVE")
    d = iot.describe_certificate(certificateId=sni["certificateId"])["certificateDescription"]
    assert (d["status"], d["certificateMode"], "caCertificateId" in d) == ("ACTIVE", "SNI_ONLY", False)

    with pytest.raises(ClientError) as exc:
        iot.delete_ca_certificate(certificateId=own.id)
    assert error_of(exc) == ("CertificateStateException", 406)
    iot.update_ca_certificate(certificateId=own.id, newStatus="INACTIVE", removeAutoRegistration=True)
    iot.delete_ca_certificate(certificateId=own.id)
    with pytest.raises(ClientError) as exc:
        iot.describe_ca_certificate(certificateId=own.id)
    assert error_of(exc) == ("ResourceNotFoundException", 404)


# ---------------------------------------------------------------------------------------------
# thing principals

def test_thing_principals_both_ways(aws, uid):
    iot = aws("iot")
    t1, t2 = f"{uid}-a", f"{uid}-b"
    iot.create_thing(thingName=t1)
    iot.create_thing(thingName=t2)
    made = iot.create_keys_and_certificate(setAsActive=True)
    arn, cert_id = made["certificateArn"], made["certificateId"]

    iot.attach_thing_principal(thingName=t1, principal=arn)
    iot.attach_thing_principal(thingName=t2, principal=arn)
    iot.attach_thing_principal(thingName=t1, principal=arn)  # again: no-op
    assert iot.list_thing_principals(thingName=t1)["principals"] == [arn]
    assert iot.list_principal_things(principal=arn)["things"] == [t1, t2]
    page = iot.list_principal_things(principal=arn, maxResults=1)
    assert page["things"] == [t1] and page["nextToken"]
    assert iot.list_principal_things(principal=arn, nextToken=page["nextToken"])["things"] == [t2]
    assert iot.list_thing_principals_v2(thingName=t1)["thingPrincipalObjects"] == [
        {"principal": arn, "thingPrincipalType": "NON_EXCLUSIVE_THING"}]

    # Neither the thing nor the certificate can go while attached.
    with pytest.raises(ClientError) as exc:
        iot.delete_thing(thingName=t1)
    assert error_of(exc) == ("InvalidRequestException", 400)
    iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
    for force in (False, True):
        with pytest.raises(ClientError) as exc:
            iot.delete_certificate(certificateId=cert_id, forceDelete=force)
        assert error_of(exc) == ("DeleteConflictException", 409), force

    # An exclusive attachment allows one thing only.
    solo = iot.create_keys_and_certificate()["certificateArn"]
    iot.attach_thing_principal(thingName=t1, principal=solo, thingPrincipalType="EXCLUSIVE_THING")
    with pytest.raises(ClientError) as exc:
        iot.attach_thing_principal(thingName=t2, principal=solo)
    assert error_of(exc) == ("InvalidRequestException", 400)
    iot.detach_thing_principal(thingName=t1, principal=solo)

    for thing in (t1, t2):
        iot.detach_thing_principal(thingName=thing, principal=arn)
    iot.detach_thing_principal(thingName=t1, principal=arn)  # not attached: no-op
    assert iot.list_thing_principals(thingName=t1)["principals"] == []
    assert iot.list_principal_things(principal=arn)["things"] == []
    iot.delete_certificate(certificateId=cert_id)
    iot.delete_thing(thingName=t1)

    missing_cert = cert_arn("a" * 64)
    for call in (lambda: iot.attach_thing_principal(thingName=t2, principal=missing_cert),
                 lambda: iot.attach_thing_principal(thingName=f"{uid}-missing", principal=solo),
                 lambda: iot.list_principal_things(principal=missing_cert),
                 lambda: iot.list_thing_principals(thingName=f"{uid}-missing")):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.attach_thing_principal(thingName=t2, principal="us-east-1:not-a-certificate")
    assert error_of(exc) == ("InvalidRequestException", 400)


# ---------------------------------------------------------------------------------------------
# paging

def test_list_certificates_pages_with_markers(aws, fresh_broker):
    iot = aws("iot", broker=fresh_broker)
    ids = [iot.create_keys_and_certificate()["certificateId"] for _ in range(5)]

    def walk(ascending: bool) -> list[str]:
        seen, marker = [], None
        while True:
            kwargs = {"pageSize": 2, "ascendingOrder": ascending, **({"marker": marker} if marker else {})}
            page = iot.list_certificates(**kwargs)
            assert len(page["certificates"]) <= 2
            seen += [c["certificateId"] for c in page["certificates"]]
            marker = page.get("nextMarker")
            if not marker:
                return seen

    assert walk(True) == ids
    assert walk(False) == ids[::-1]  # newest first is the default order, as AWS
    assert [c["certificateId"] for c in iot.list_certificates()["certificates"]] == ids[::-1]
    first = iot.list_certificates(pageSize=1)["certificates"][0]
    assert set(first) == {"certificateArn", "certificateId", "status", "certificateMode", "creationDate"}
    pages = list(iot.get_paginator("list_certificates").paginate(PaginationConfig={"PageSize": 2}))
    assert [c["certificateId"] for p in pages for c in p["certificates"]] == ids[::-1]


# ---------------------------------------------------------------------------------------------
# the aws CLI

def test_certificates_with_the_aws_cli(aws_cli, uid, tmp_path):
    made = aws_cli("iot", "create-keys-and-certificate", "--set-as-active")
    cert_id, arn = made["certificateId"], made["certificateArn"]
    assert cert_id == hashlib.sha256(der_of(made["certificatePem"])).hexdigest()
    assert "PrivateKey" in made["keyPair"]
    d = aws_cli("iot", "describe-certificate", "--certificate-id", cert_id)["certificateDescription"]
    assert d["status"] == "ACTIVE"

    thing = f"{uid}-cli"
    aws_cli("iot", "create-thing", "--thing-name", thing)
    aws_cli("iot", "attach-thing-principal", "--thing-name", thing, "--principal", arn)
    assert aws_cli("iot", "list-thing-principals", "--thing-name", thing)["principals"] == [arn]
    assert aws_cli("iot", "list-principal-things", "--principal", arn)["things"] == [thing]

    done = aws_cli("iot", "delete-certificate", "--certificate-id", cert_id, check=False)
    assert done.returncode != 0 and "CertificateStateException" in done.stderr, done.stderr
    aws_cli("iot", "update-certificate", "--certificate-id", cert_id, "--new-status", "INACTIVE")
    done = aws_cli("iot", "delete-certificate", "--certificate-id", cert_id, check=False)
    assert done.returncode != 0 and "DeleteConflictException" in done.stderr, done.stderr
    aws_cli("iot", "detach-thing-principal", "--thing-name", thing, "--principal", arn)
    aws_cli("iot", "delete-certificate", "--certificate-id", cert_id)
    done = aws_cli("iot", "describe-certificate", "--certificate-id", cert_id, check=False)
    assert done.returncode != 0 and "ResourceNotFoundException" in done.stderr, done.stderr

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(_name("cli-device"))
           .sign(key, hashes.SHA256()))
    csr_path = tmp_path / "device.csr"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    from_csr = aws_cli("iot", "create-certificate-from-csr",
                       "--certificate-signing-request", f"file://{csr_path}")
    assert x509.load_pem_x509_certificate(from_csr["certificatePem"].encode()).subject == _name("cli-device")

    own = OwnCa(f"cli CA {uid}")
    ca_path = tmp_path / "ca.pem"
    ca_path.write_text(own.pem)
    out = aws_cli("iot", "register-ca-certificate", "--ca-certificate", f"file://{ca_path}",
                  "--set-as-active")
    assert out["certificateId"] == own.id
    device_path = tmp_path / "device.pem"
    device_path.write_text(own.leaf("cli-registered"))
    out = aws_cli("iot", "register-certificate", "--certificate-pem", f"file://{device_path}",
                  "--ca-certificate-pem", f"file://{ca_path}", "--status", "ACTIVE")
    listed = aws_cli("iot", "list-certificates-by-ca", "--ca-certificate-id", own.id)
    assert [c["certificateId"] for c in listed["certificates"]] == [out["certificateId"]]


# ---------------------------------------------------------------------------------------------
# persistence

def test_certificates_survive_a_restart(aws, fresh_broker):
    iot = aws("iot", broker=fresh_broker)
    made = iot.create_keys_and_certificate(setAsActive=True)
    revoked = iot.create_keys_and_certificate(setAsActive=True)["certificateId"]
    iot.update_certificate(certificateId=revoked, newStatus="REVOKED")
    own = OwnCa("kept CA")
    iot.register_ca_certificate(caCertificate=own.pem, setAsActive=True)
    device = iot.register_certificate(certificatePem=own.leaf("kept"), status="ACTIVE")
    iot.create_thing(thingName="kept-thing")
    iot.attach_thing_principal(thingName="kept-thing", principal=made["certificateArn"])
    code = iot.get_registration_code()["registrationCode"]

    fresh_broker.restart()
    iot = aws("iot", broker=fresh_broker)
    d = iot.describe_certificate(certificateId=made["certificateId"])["certificateDescription"]
    assert (d["status"], d["certificatePem"]) == ("ACTIVE", made["certificatePem"])
    assert iot.describe_certificate(certificateId=revoked)["certificateDescription"]["status"] == "REVOKED"
    with pytest.raises(ClientError) as exc:
        iot.update_certificate(certificateId=revoked, newStatus="ACTIVE")
    assert error_of(exc) == ("CertificateStateException", 406)
    assert iot.describe_ca_certificate(certificateId=own.id)["certificateDescription"]["status"] == "ACTIVE"
    assert iot.describe_certificate(certificateId=device["certificateId"])[
        "certificateDescription"]["caCertificateId"] == own.id
    assert iot.list_principal_things(principal=made["certificateArn"])["things"] == ["kept-thing"]
    assert iot.get_registration_code()["registrationCode"] == code
    # Certificates issued after the restart still chain to the same CA.
    again = iot.create_keys_and_certificate()
    x509.load_pem_x509_certificate(again["certificatePem"].encode()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(fresh_broker.ca_pem.read_bytes()))
