"""Chart files that must agree with the rest of the repository, checked without a cluster."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts/cogwork"


def test_chart_crds_are_the_generated_crds() -> None:
    """charts/cogwork/crds/ is a copy of crds/ (`make crds` writes both)."""
    generated = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    packaged = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert generated, "no generated CRDs"
    assert packaged.keys() == generated.keys()
    for name, text in generated.items():
        assert packaged[name] == text, f"charts/cogwork/crds/{name} is stale: run `make crds`"


def test_operator_rules_grant_no_secrets_and_no_wildcards() -> None:
    rules = yaml.safe_load((CHART / "files/operator-rules.yaml").read_text())
    for rule in rules:
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
        if rule["apiGroups"] == [""] and "pods" in rule["resources"]:
            assert "update" not in rule["verbs"]  # the operator patches, never replaces
