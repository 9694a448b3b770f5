"""TrainJob models: defaults, validation parity with the CRD's rules, condition helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from cogwork.api.common import (
    Condition,
    cel_unchanged,
    find_condition,
    parse_quantity,
    set_condition,
    to_wire,
)
from cogwork.api.trainjob import DEFAULT_IMAGE, TrainJob
from cogwork.api.trainjob_spec import FailureAction
from cogwork.api.trainjob_status import TrainJobStatus
from pydantic import ValidationError
from trainjob_cases import CREATE_CASES, Case, job

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 12, 5, 0, tzinfo=UTC)


def test_defaults_fill_every_optional_block() -> None:
    spec = TrainJob.model_validate(job()).spec
    assert spec.image == DEFAULT_IMAGE
    assert spec.image_pull_policy == "IfNotPresent"
    assert (spec.suspend, spec.stop) == (False, False)
    assert spec.nodes.count is None and spec.nproc_per_node == 1
    assert (spec.resources.cpu, spec.resources.memory, spec.resources.gpu) == ("1", "2Gi", 0)
    assert (spec.checkpoint.every_steps, spec.checkpoint.keep) == (50, 3)
    assert (spec.checkpoint.size, spec.checkpoint.access_mode) == ("1Gi", "ReadWriteMany")
    assert spec.failure_policy.backoff_limit == 3 and spec.failure_policy.rules == []
    rdzv = spec.rendezvous
    assert (rdzv.join_timeout_seconds, rdzv.last_call_timeout_seconds, rdzv.max_restarts) == (
        60, 3, 3)
    assert spec.task is not None and spec.task.model == "mlp" and spec.task.batch_size == 64


def test_camel_case_wire_format_round_trips() -> None:
    doc = job(nprocPerNode=2, resources={"cpu": 2, "memory": "4Gi", "gpu": 1},
              checkpoint={"everySteps": 10, "claimName": "shared"})
    parsed = TrainJob.model_validate(doc)
    assert parsed.spec.resources.cpu == "2"  # integer quantities are kept as text
    wire = to_wire(parsed.spec)
    assert wire["nprocPerNode"] == 2 and wire["checkpoint"]["claimName"] == "shared"
    assert TrainJob.model_validate({**doc, "spec": wire}).spec == parsed.spec


def test_unknown_spec_fields_are_rejected_like_kubectl_strict_validation() -> None:
    with pytest.raises(ValidationError, match="nodez"):
        TrainJob.model_validate(job(nodez={"min": 1}))


def test_failure_actions_parse_to_the_enum() -> None:
    doc = job(failurePolicy={"rules": [{"action": "Ignore",
                                        "onPodConditions": ["DisruptionTarget"]}]})
    rule = TrainJob.model_validate(doc).spec.failure_policy.rules[0]
    assert rule.action is FailureAction.IGNORE


@pytest.mark.parametrize("case", [c for c in CREATE_CASES if not c.cel_only],
                         ids=lambda c: c.name)
def test_offline_validation_matches_the_crd(case: Case) -> None:
    """`cogwork run` must accept and reject what the apiserver accepts and rejects."""
    if not case.expect:
        TrainJob.model_validate(case.new)
        return
    with pytest.raises(ValidationError) as raised:
        TrainJob.model_validate(case.new)
    # Our own rules give the CEL message; schema errors (enum, minimum, pattern) name the
    # field, which pydantic writes as spec.failurePolicy.rules.0.action.
    text = str(raised.value)
    for want in case.expect:
        assert want in text or want.replace("[", ".").replace("]", "") in text, (want, text)


def test_status_tolerates_fields_from_newer_operators() -> None:
    status = TrainJobStatus.model_validate({"phase": "Running", "someFutureField": 1,
                                            "nodesText": "1/2"})
    assert status.phase == "Running" and status.nodes_text == "1/2"


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("2Gi", Decimal(2 * 2**30)),
    ("1.5k", Decimal(1500)), ("1e3", Decimal(1000)), ("3E", Decimal("3e18")), (4, Decimal(4)),
])
def test_parse_quantity(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_parse_quantity_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity("2 GB")


def test_set_condition_keeps_transition_time_while_status_is_unchanged() -> None:
    conditions = set_condition([], "Running", "True", "NodesRunning", "2 of 2", now=T0)
    again = set_condition(conditions, "Running", "True", "NodesRunning", "1 of 2",
                          observed_generation=3, now=T1)
    running = find_condition(again, "Running")
    assert running is not None
    assert running.last_transition_time == "2026-01-01T12:00:00Z"
    assert (running.message, running.observed_generation) == ("1 of 2", 3)
    flipped = find_condition(set_condition(again, "Running", "False", "Suspended", now=T1),
                             "Running")
    assert flipped is not None and flipped.last_transition_time == "2026-01-01T12:05:00Z"


def test_set_condition_keeps_order_and_does_not_mutate() -> None:
    first = [Condition(type="Created", status="True"), Condition(type="Running", status="False")]
    updated = set_condition(first, "Created", "False", "Gone", now=T0)
    assert [c.type for c in updated] == ["Created", "Running"]
    assert first[0].status == "True"
    assert [c.type for c in set_condition(updated, "Failed", "True", "X", now=T0)] == [
        "Created", "Running", "Failed"]


def test_cel_unchanged_guards_every_level_of_a_nested_path() -> None:
    rule = cel_unchanged("podTemplate.nodeSelector")
    assert "has(self.podTemplate) && has(self.podTemplate.nodeSelector)" in rule
    assert "has(oldSelf.podTemplate) && has(oldSelf.podTemplate.nodeSelector)" in rule
    assert rule.endswith("self.podTemplate.nodeSelector == oldSelf.podTemplate.nodeSelector))")
