"""fromTuneJob, resolved purely: wait while the TuneJob is missing or running, fail when it
failed or forms a cycle, and write its best trial's values where its parameters put them."""

from __future__ import annotations

from typing import Any

import pytest
from cogwork.api.trainjob import TrainJob
from cogwork.api.tunejob import SELF_REFERENCE_MESSAGE, TuneJob
from cogwork.plan.tunejob_refs import describe, resolve_tuned, tuned_spec
from pydantic import ValidationError
from tuning_helpers import BATCH, LR, WIDTH, tunejob

FIELD = "spec.fromTuneJob=search"
REFERRER = ("TrainJob", "final")
ENV = {"name": "dropout", "env": "DROPOUT", "uniform": {"min": "0", "max": "0.5"}}


def finished(state: str, best: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": state, "conditions": [
        {"type": state, "status": "True", "reason": "Done", "message": f"it {state.lower()}"}]}
    if best is not None:
        status["bestTrial"] = best
    job = tunejob(LR, WIDTH, BATCH, ENV, status=status, **spec)
    return job.model_dump(mode="json", by_alias=True, exclude_none=True)


BEST = {"name": "search-t3", "index": 3, "value": 0.97,
        "params": {"lr": "0.0316", "width": "48", "batch": "128", "dropout": "0.125"}}


def test_missing_and_running_tunejobs_are_waited_for_naming_the_field() -> None:
    assert resolve_tuned(FIELD, REFERRER, None).waiting == f"{FIELD}: TuneJob not found (yet)"
    running = tunejob(status={"phase": "Running"}).model_dump(mode="json", by_alias=True)
    waiting = resolve_tuned(FIELD, REFERRER, running)
    assert waiting.waiting == f"{FIELD}: waiting for the TuneJob to succeed (phase Running)"
    assert waiting.tuned is None and waiting.failed is None


def test_a_failed_tunejob_fails_the_referrer_naming_the_reference() -> None:
    failed = resolve_tuned(FIELD, REFERRER, finished("Failed"))
    assert failed.failed == f"{FIELD}: the TuneJob failed: it failed"
    no_best = resolve_tuned(FIELD, REFERRER, finished("Succeeded"))
    assert no_best.failed == f"{FIELD}: the TuneJob succeeded without a best trial"


def test_best_values_go_where_the_tunejobs_parameters_put_them() -> None:
    resolved = resolve_tuned(FIELD, REFERRER, finished("Succeeded", BEST)).tuned
    assert resolved is not None and resolved.trial == "search-t3"
    own = {"task": {"name": "image-classification", "epochs": 30, "learningRate": "0.9"},
           "data": {"dataset": "digits"}, "env": [{"name": "DROPOUT", "value": "0.9"},
                                                  {"name": "KEEP", "value": "1"}],
           "fromTuneJob": "search"}
    spec = tuned_spec(own, resolved)
    assert spec["task"] == {"name": "image-classification", "epochs": 30,
                            "learningRate": "0.0316", "hiddenSize": 48, "batchSize": 128}
    assert {"name": "DROPOUT", "value": "0.125"} in spec["env"]
    assert {"name": "KEEP", "value": "1"} in spec["env"]
    assert own["task"]["learningRate"] == "0.9"  # the manifest itself is untouched
    job = TrainJob.model_validate({"metadata": {"name": "final"}, "spec": spec})
    assert job.spec.task is not None and job.spec.task.hidden_size == 48
    assert describe(resolved) == ("parameters of TuneJob search's best trial search-t3: "
                                  "lr=0.0316, width=48, batch=128, dropout=0.125")


def test_a_tunejob_cannot_name_itself_and_a_two_tunejob_cycle_fails() -> None:
    with pytest.raises(ValidationError, match="names this TuneJob"):
        tunejob(name="second", trialTemplate={"task": {"name": "image-classification"},
                                              "data": {"dataset": "digits"},
                                              "fromTuneJob": "second"})
    assert "cannot start from its own best trial" in SELF_REFERENCE_MESSAGE
    first = tunejob(name="first", trialTemplate={"task": {"name": "image-classification"},
                                                 "data": {"dataset": "digits"},
                                                 "fromTuneJob": "second"})
    cycle = resolve_tuned("spec.trialTemplate.fromTuneJob=first", ("TuneJob", "second"),
                          first.model_dump(mode="json", by_alias=True))
    assert cycle.failed is not None and "reference cycle" in cycle.failed


def test_the_status_keeps_what_was_resolved() -> None:
    resolved = resolve_tuned(FIELD, REFERRER, finished("Succeeded", BEST)).tuned
    assert resolved is not None
    job = TrainJob.model_validate({
        "metadata": {"name": "final"},
        "spec": {"task": {"name": "image-classification"}, "data": {"dataset": "digits"},
                 "fromTuneJob": "search"},
        "status": {"tunedFrom": resolved.model_dump(mode="json", by_alias=True)}})
    assert job.status.tuned_from == resolved
    assert isinstance(TuneJob.model_validate(finished("Succeeded", BEST)), TuneJob)
