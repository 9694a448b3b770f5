"""Operator configuration from the environment (the Helm chart sets these)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


@dataclass(frozen=True)
class OperatorConfig:
    # Where pods reach the report endpoint, e.g. https://cogwork-operator.cogwork-system.svc:8443
    report_base_url: str
    report_listen_host: str
    report_listen_port: int
    report_cert_file: str
    report_key_file: str
    report_ca_pem: str
    trainer_service_account: str
    trainer_image: str | None
    # Extra env for every training pod ("K=V,K2=V2"): operator-level knobs such as
    # COGWORK_STEP_DELAY_SECONDS, which users cannot set (COGWORK_* names are reserved).
    trainer_extra_env: dict[str, str]
    # Port of the Prometheus /metrics endpoint (the chart sets it); 0, the default, is off so
    # that several local operators never race for one port.
    metrics_port: int
    # CPU and memory of the rendezvous store pods (chart: trainer.rendezvous); None: the
    # renderer's defaults.
    rdzv_cpu: str | None = None
    rdzv_memory: str | None = None

    @staticmethod
    def from_env() -> OperatorConfig:
        base = os.environ.get("COGWORK_REPORT_URL", "https://cogwork-operator.cogwork-system.svc:8443")
        listen = os.environ.get("COGWORK_REPORT_LISTEN", "0.0.0.0:8443")
        host, _, port = listen.rpartition(":")
        cert = os.environ.get("COGWORK_REPORT_CERT_FILE")
        key = os.environ.get("COGWORK_REPORT_KEY_FILE")
        ca = os.environ.get("COGWORK_REPORT_CA_FILE")
        if not (cert and key):
            cert, key, ca = _self_signed(urlparse(base).hostname or "localhost")
        return OperatorConfig(
            report_base_url=base.rstrip("/"),
            report_listen_host=host or "0.0.0.0",
            report_listen_port=int(port),
            report_cert_file=cert,
            report_key_file=key,
            report_ca_pem=Path(ca or cert).read_text(),
            trainer_service_account=os.environ.get("COGWORK_TRAINER_SERVICE_ACCOUNT", "default"),
            trainer_image=os.environ.get("COGWORK_TRAINER_IMAGE") or None,
            trainer_extra_env=dict(
                item.split("=", 1)
                for item in os.environ.get("COGWORK_TRAINER_EXTRA_ENV", "").split(",")
                if "=" in item
            ),
            metrics_port=int(os.environ.get("COGWORK_METRICS_PORT", "0")),
            rdzv_cpu=os.environ.get("COGWORK_RDZV_CPU") or None,
            rdzv_memory=os.environ.get("COGWORK_RDZV_MEMORY") or None,
        )


def _self_signed(host: str) -> tuple[str, str, str]:
    """A throwaway CA + serving certificate for `host`, when the chart mounts none."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = Path(tempfile.mkdtemp(prefix="cogwork-report-tls-"))
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return str(cert_file), str(key_file), str(cert_file)
