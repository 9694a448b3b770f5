"""Certificates and keys for the local control plane (CA, apiserver serving cert, SA keys, the
apiserver's client cert for the node agent's kubelet endpoint and that endpoint's serving cert)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The CN kube-apiserver presents to kubelets (kubeadm's name); the node agent lets only it in.
KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, cn: str = "cogwork-test-ca") -> CertPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    pair = CertPair(directory / f"{cn}.crt", directory / f"{cn}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pair.key, key)
    return pair


def _signed_by(ca: CertPair, directory: Path, cn: str, subject: x509.Name,
               extensions: list[x509.ExtensionType]) -> CertPair:
    """A new EC key and its certificate for `subject`, signed by `ca`, valid for a year."""
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    pair = CertPair(directory / f"{cn}.crt", directory / f"{cn}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pair.key, key)
    return pair


def make_serving_cert(
    directory: Path, ca: CertPair, cn: str, dns_names: list[str], ips: list[str]
) -> CertPair:
    """A server certificate signed by `ca` for the given DNS names and IP addresses."""
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    return _signed_by(ca, directory, cn, _name(cn), [
        x509.SubjectAlternativeName(sans),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])])


def make_client_cert(directory: Path, ca: CertPair, cn: str,
                     organizations: tuple[str, ...] = ()) -> CertPair:
    """A TLS client certificate signed by `ca` (CN: user name, O: groups)."""
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
                        + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return _signed_by(ca, directory, cn, subject,
                      [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])


def make_service_account_keys(directory: Path) -> CertPair:
    """RSA key pair the apiserver signs and verifies ServiceAccount tokens with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pair = CertPair(directory / "sa.pub", directory / "sa.key")
    _write_key(pair.key, key)
    pair.cert.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pair
