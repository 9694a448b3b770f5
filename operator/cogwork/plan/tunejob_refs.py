"""`fromTuneJob`: a TrainJob's spec (or a TuneJob's trial template, for a narrowing second
search) takes the parameters of a Succeeded TuneJob's best trial, so a GitOps repository can
declare label -> tune -> train in one commit. Pure: resolved from the referenced TuneJob as the
controller read it, in words that name the field, like every reference (plan/labeljob_refs.py):

- the TuneJob is missing, or not finished yet: the job waits (Created=False, it says for what);
- the TuneJob Failed, or Succeeded without a best trial: the job fails naming the reference;
- a TuneJob whose template names this TuneJob back: a cycle, refused (a TuneJob naming itself
  is refused at apply by CEL);
- once resolved, the values are kept in the job's status.tunedFrom, so a started job never
  reads the TuneJob again (it may be deleted, its spec may change) and never changes under a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cogwork.api.common import TunedFrom
from cogwork.api.tunejob import TuneJob
from cogwork.plan.lifecycle import referenced_outcome
from cogwork.plan.tunejob_observe import apply_values, tuned_values

WAITING_FOR_PARAMETERS = "WaitingForParameters"
REFERENCE_FAILED = "ReferenceFailed"


@dataclass(frozen=True)
class TunedResolution:
    """Exactly one of: the values to apply, what the job waits for, why it can never have them."""

    tuned: TunedFrom | None = None
    waiting: str | None = None
    failed: str | None = None


def resolve_tuned(field: str, referrer: tuple[str, str], tunejob: Mapping[str, Any] | None
                  ) -> TunedResolution:
    """What `field` (e.g. "spec.fromTuneJob=tune") resolves to; `referrer` is (kind, name) of
    the job that holds the reference, `tunejob` the TuneJob it names (None: absent)."""
    if tunejob is None:
        return TunedResolution(waiting=f"{field}: TuneJob not found (yet)")
    try:
        source = TuneJob.model_validate(tunejob)
    except ValidationError as err:
        return TunedResolution(failed=f"{field}: the TuneJob is invalid: "
                                      f"{err.errors()[0]['msg']}")
    if referrer[0] == "TuneJob" and source.spec.trial_template.from_tune_job == referrer[1]:
        return TunedResolution(failed=f"{field}: reference cycle: TuneJob "
                                      f"{source.metadata.name}'s spec.trialTemplate.fromTuneJob "
                                      f"names this TuneJob")
    state, message = referenced_outcome(tunejob)
    if state == "Failed":
        return TunedResolution(failed=f"{field}: the TuneJob failed: {message}")
    if state != "Succeeded":
        phase = source.status.phase or "Pending"
        return TunedResolution(waiting=f"{field}: waiting for the TuneJob to succeed "
                                       f"(phase {phase})")
    best = source.status.best_trial
    if best is None:
        return TunedResolution(failed=f"{field}: the TuneJob succeeded without a best trial")
    values = tuned_values(source.spec.parameters, best.params)
    return TunedResolution(TunedFrom(tune_job=source.metadata.name, trial=best.name,
                                     values=values))


def tuned_spec(spec: Mapping[str, Any], tuned: TunedFrom) -> dict[str, Any]:
    """`spec` (wire form) with the tuned values written in, as the TuneJob wrote its trials."""
    return apply_values(dict(spec), tuned.values)


def describe(tuned: TunedFrom) -> str:
    values = ", ".join(f"{v.name}={v.value}" for v in tuned.values)
    return f"parameters of TuneJob {tuned.tune_job}'s best trial {tuned.trial}: {values}"
