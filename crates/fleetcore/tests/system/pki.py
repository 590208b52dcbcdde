"""Certificates for the tests: client certificates signed by the broker's CA (fleetcore makes its
CA on first start; in Mosquitto mode the suite makes one in the same layout)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, ed448
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _sign_alg(key):
    return None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def load_ca(ca_pem: Path, ca_key: Path):
    cert = x509.load_pem_x509_certificate(Path(ca_pem).read_bytes())
    key = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    return cert, key


def make_ca(ca_pem: Path, ca_key: Path, cn: str = "fleetcore test CA") -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(hours=1))
        .not_valid_after(_now() + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    Path(ca_pem).parent.mkdir(parents=True, exist_ok=True)
    Path(ca_pem).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(Path(ca_key), key)


def _leaf(ca_pem, ca_key, cn: str, out_cert: Path, out_key: Path, server: bool,
          dns=(), ips=()) -> tuple[Path, Path]:
    ca_cert, ca_priv = load_ca(ca_pem, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(hours=1))
        .not_valid_after(_now() + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_priv.public_key()),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_priv, _sign_alg(ca_priv))
    out_cert = Path(out_cert)
    out_cert.parent.mkdir(parents=True, exist_ok=True)
    out_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(Path(out_key), key)
    return out_cert, Path(out_key)


def make_server_cert(ca_pem, ca_key, out_cert, out_key):
    return _leaf(ca_pem, ca_key, "localhost", out_cert, out_key, server=True,
                 dns=("localhost",), ips=("127.0.0.1",))


def make_client_cert(ca_pem, ca_key, cn: str, out_dir: Path) -> tuple[Path, Path]:
    """A client certificate whose CN is the principal `cn`, signed by the given CA."""
    out_dir = Path(out_dir)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in cn)
    return _leaf(ca_pem, ca_key, cn, out_dir / f"{safe}.pem", out_dir / f"{safe}.key", server=False)


def cert_sans(pem: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(Path(pem).read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [str(i) for i in ext.get_values_for_type(x509.IPAddress)]
