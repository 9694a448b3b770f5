"""Operator-level configuration the planners need (not part of any job's spec)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_REPORT_BASE_URL = "https://cogwork-operator.cogwork-system.svc:8443"
# Route of the operator's report endpoint (cogwork.controllers.report).
DEFAULT_REPORT_PATH = "/v1/namespaces/{namespace}/trainjobs/{name}/report"


@dataclass(frozen=True)
class RenderSettings:
    # Where pods reach the operator (in tests: the host's bridge address, the operator runs there).
    report_base_url: str = DEFAULT_REPORT_BASE_URL
    report_path: str = DEFAULT_REPORT_PATH
    # PEM of the CA that signed the report endpoint's certificate; public data, sent as env.
    report_ca_pem: str = ""
    # ServiceAccount of training pods unless spec.podTemplate names one; None: namespace default.
    service_account_name: str | None = "cogwork-trainer"
    # Replaces the built-in default trainer image (a mirror); explicit other images are kept.
    image: str | None = None
    # Python executable in the containers; tests run pods as local processes with a given venv.
    python: str = "python"
    # Namespace of manifests that name none (`cogwork render`).
    default_namespace: str = "default"
    # Suffix of in-cluster Service names: <svc>.<ns>.<service_domain>.
    service_domain: str = "svc"
    # The rendezvous store pod only hosts a TCPStore: small, so a LimitRange admits it.
    rdzv_cpu: str = "100m"
    rdzv_memory: str = "512Mi"
    # Extra env for every training pod (e.g. COGWORK_STEP_DELAY_SECONDS in tests); users cannot
    # set COGWORK_* names themselves.
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def report_url(self, namespace: str, name: str) -> str:
        path = self.report_path.format(namespace=namespace, name=name)
        return f"{self.report_base_url.rstrip('/')}{path}"
