"""The LabelJob state machine: LabelJob + observed pods + resolved model -> actions. Pure.

Stages, each recomputed from the pods on every pass (deterministic names, so a repeated create
after an operator restart gets 409): output claim -> `inference.replicas` score pods (shard i of
n) -> the merge pod -> the Label Studio push pod (with spec.sink). With spec.review.maxRounds > 1
a round that routed items to review goes on: the collect pod brings the batch back labeled ->
TrainJob `<job>-r<r+1>` retrains on the labels so far -> round r+1 scores with its model
(`<job>-r<r+1>-score-0`, ...). Counts reach the operator as the steps' termination messages, so
it never reads the volume. Succeeded/Failed are sticky: a finished job never recreates pods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cogwork.api.common import parse_rfc3339
from cogwork.api.labeljob import LabelCounts, LabelJob, LabelJobStatus, LabelOutputs
from cogwork.plan.labeljob_observe import LabelPod, parse_summary
from cogwork.plan.labeljob_refs import ModelResolution
from cogwork.plan.labeljob_render import (
    output_claim,
    output_claim_name,
    output_path,
    pod_layout,
    step_pod,
    step_pod_name,
)
from cogwork.plan.labeljob_rounds import retrain_name, retrain_trainjob, retrained_model
from cogwork.plan.labeljob_steps import ModelRef, Step, collect_step, steps
from cogwork.plan.lifecycle import TERMINAL, Actions, Hold, Lifecycle
from cogwork.plan.settings import RenderSettings

LABEL_STUDIO_ERROR_EXIT = 3  # labelstudio.py: unreachable or refused; retrying may help
PUSH_RETRY_AFTER = timedelta(seconds=30)
CONFIG_ERROR = "CreateContainerConfigError"  # e.g. the sink's Secret or key is missing
# status.outputs field -> file on the output claim.
OUTPUT_FILES = {"labels": "labels.csv", "dataset": "dataset.npz",
                "review_tasks": "review-tasks.json", "label_issues": "label-issues.csv",
                "calibration": "calibration.json"}
# status field -> the merge step's summary key.
SUMMARY_COUNTS = {"total": "total", "predicted": "predicted", "auto_accepted": "autoAccepted",
                  "routed_to_review": "routedToReview", "human_labeled": "humanLabeled",
                  "flagged_errors": "flaggedErrors"}
SUMMARY_FIELDS = {"threshold": "threshold", "certified_lower_bound": "lowerBound",
                  "coverage": "coverage", "round": "round",
                  "items_per_second": "itemsPerSecond", "model_version": "modelVersion"}


def _last_line(text: str | None, limit: int = 300) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1][-limit:] if lines else ""


@dataclass(frozen=True)
class Retraining:
    """What review rounds need besides the pods: the TrainJob spec.model.fromTrainJob names
    (the retrains copy its spec) and the retrain TrainJobs that exist, by round."""

    source: Mapping[str, Any] | None = None
    trainjobs: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)


class _Pass(Lifecycle[LabelJob]):
    """One pass of a LabelJob: the shared lifecycle plus its steps' pods and review rounds."""

    SUSPEND_MESSAGE = "job suspended: running pods deleted, outputs kept"

    def __init__(self, job: LabelJob, pods: list[LabelPod], model: ModelResolution,
                 now: datetime, settings: RenderSettings, retraining: Retraining,
                 hold: Hold | None = None) -> None:
        super().__init__(job, now, LabelJobStatus, hold)
        self.spec, self.model = job.spec, model
        self.settings, self.retraining = settings, retraining
        self.pods = {p.name: p for p in pods}
        self.round = 0  # the review round this pass is at

    def delete(self, pod: LabelPod) -> None:
        if not pod.deleting:
            self.delete_child("Pod", pod.name)

    def stop_children(self) -> None:
        for pod in self.pods.values():  # finished steps stay: their logs, and resuming
            if pod.phase not in TERMINAL:
                self.delete(pod)

    def pod(self, step: Step) -> LabelPod | None:
        return self.pods.get(step_pod_name(self.job, step))

    def ensure(self, step: Step, model: ModelRef) -> LabelPod | None:
        """The step's pod; created (claim first) when it does not exist."""
        pod = self.pod(step)
        if pod is None:
            if not self.out.create:
                claim = output_claim(self.job, self.settings)
                self.out.create.extend([claim] if claim else [])
            self.out.create.append(step_pod(self.job, step, model, self.settings))
            self.mark_created("PodsCreated", "labeling pods created",
                              f"created {step_pod_name(self.job, step)}")
        return pod

    def active(self) -> None:
        self.report_scheduling(self.pods.values())
        self.report_input(self.model.gone)
        if self.model.failed:
            self.finish("Failed", "ModelUnavailable", self.model.failed)
            return
        if self.model.waiting or self.model.model is None:
            self.cond("Created", "False", "WaitingForModel", self.model.waiting or "")
            return
        model: ModelRef | None = self.model.model
        rounds = self.spec.review.max_rounds
        training_items: int | None = None  # labels the next retrain trains on
        for round_ in range(rounds):
            self.round = round_
            self.out.status.set(round=round_)
            if round_ > 0:
                model = self.retrained(round_, training_items)
            if model is None:
                return
            summary = self.label(model, round_)
            if summary is None:
                return
            routed = int(summary.get("routedToReview") or 0)
            if round_ + 1 >= rounds or routed == 0:
                self.finish("Succeeded", "Completed",
                            f"{summary.get('autoAccepted', 0)} label(s) auto-accepted, "
                            f"{routed} routed to review"
                            + (f" after {round_ + 1} round(s)" if rounds > 1 else ""))
                return
            collected = self.collected(model, round_, routed)
            if collected is None:
                return
            training_items = collected.get("trainingItems")

    def label(self, model: ModelRef, round_: int) -> dict[str, Any] | None:
        """One labeling pass: score shards, merge, push; its summary once it is all done."""
        plan = steps(self.job, pod_layout(self.job), model, round_)
        if self.check_failures(plan):
            return None
        scores = [s for s in plan if s.role == "score"]
        merge = next(s for s in plan if s.role == "merge")
        push = next((s for s in plan if s.role == "push"), None)
        score_pods = [self.ensure(s, model) for s in scores]
        self.progress(score_pods)
        done = sum(p is not None and p.phase == "Succeeded" for p in score_pods)
        if done < len(scores):
            self.running(f"scoring: {done} of {len(scores)} shard(s) done")
            return None
        merged = self.ensure(merge, model)
        if merged is None or merged.phase != "Succeeded":
            self.running("merging shards: certify, accept, select review batch")
            return None
        summary = parse_summary(merged.message)
        if summary is None:
            self.finish("Failed", "NoSummary", f"{merged.name} succeeded without a summary in "
                                               "its termination message")
            return None
        self.summarize(summary)
        if push is not None and not self.pushed(push, model):
            return None
        return summary

    def collected(self, model: ModelRef, round_: int, routed: int) -> dict[str, Any] | None:
        """The collect step's summary once people's labels for the round's review batch are
        back; None while they are not."""
        step = collect_step(self.job, pod_layout(self.job), model, round_)
        if self.check_failures([step]):
            return None
        pod = self.ensure(step, model)
        if pod is None or pod.phase != "Succeeded":
            self.running(f"waiting for people to label the {routed} item(s) sent to review")
            return None
        summary = parse_summary(pod.message) or {}
        if summary.get("humanLabeled") is not None:  # a merge patch: the other counts stay
            self.out.status.set(counts=LabelCounts(human_labeled=int(summary["humanLabeled"])))
        return summary

    def retrained(self, round_: int, training_items: int | None) -> ModelRef | None:
        """Round `round_`'s model: TrainJob <job>-r<round> on the labels so far (created here)."""
        name = retrain_name(self.job, round_)
        trainjob = self.retraining.trainjobs.get(round_)
        if trainjob is None:
            source = self.retraining.source
            if source is None:  # spec.model.fromTrainJob was deleted after round 0 used it
                self.finish("Failed", "RetrainUnavailable",
                            f"spec.model.fromTrainJob={self.spec.model.from_train_job}: the "
                            f"TrainJob is gone; round {round_} has no spec to retrain with")
                return None
            self.out.create.append(retrain_trainjob(self.job, round_, source, self.settings,
                                                    training_items))
            self.event("Retraining", f"round {round_}: created TrainJob {name} on the labels "
                                     "gathered so far")
            self.running(f"retraining: TrainJob {name}")
            return None
        resolution = retrained_model(self.job, round_, trainjob)
        if resolution.failed:
            self.finish("Failed", "RetrainFailed", resolution.failed)
            return None
        if resolution.model is None:
            self.running(f"retraining: {resolution.waiting}")
        return resolution.model

    def running(self, message: str) -> None:
        rounds = self.spec.review.max_rounds
        if rounds > 1:
            message = f"round {self.round + 1} of {rounds}: {message}"
        self.cond("Running", "True", "StepsRunning", message)

    def check_failures(self, plan: list[Step]) -> bool:
        for step in plan:
            pod = self.pod(step)
            if pod is None or pod.phase != "Failed" or pod.deleting:
                continue
            sink = self.spec.sink is not None and self.spec.sink.label_studio is not None
            if sink and step.role in ("push", "collect") and \
                    pod.exit_code == LABEL_STUDIO_ERROR_EXIT:
                self.cond("SinkReady", "False", "LabelStudioError", _last_line(pod.message))
                finished = parse_rfc3339(pod.finished_at) or self.now
                if self.now - finished >= PUSH_RETRY_AFTER:
                    self.delete(pod)  # recreated on a later pass: pushing is idempotent
                continue
            code = pod.exit_code
            detail = _last_line(pod.message)
            self.finish("Failed", f"ExitCode{code}" if code is not None else "PodFailed",
                        f"{pod.name} ({step.role}) exited with code {code}"
                        + (f": {detail}" if detail else ""))
            return True
        return False

    def pushed(self, push: Step, model: ModelRef) -> bool:
        pod = self.ensure(push, model)
        sink = self.spec.sink.label_studio if self.spec.sink else None
        if pod is not None and pod.waiting_reason == CONFIG_ERROR and sink is not None:
            ref = sink.secret_ref
            self.cond("SinkReady", "False", "SecretNotFound",
                      f"spec.sink.labelStudio.secretRef (secret {ref.name!r}, key {ref.key!r}): "
                      f"{pod.waiting_message or 'cannot be read'}")
            self.running("waiting for the Label Studio secret")
            return False
        if pod is None or pod.phase != "Succeeded":
            self.running("pushing the review batch to Label Studio")
            return False
        self.cond("SinkReady", "True", "Pushed", f"review tasks imported into project "
                                                 f"{sink.project if sink else '?'}")
        return True

    def progress(self, score_pods: list[LabelPod | None]) -> None:
        """Items scored so far, from the finished shards' termination messages."""
        shards = [s for s in (parse_summary(p.message) for p in score_pods
                              if p is not None and p.phase == "Succeeded") if s]
        if not shards:
            return
        items = sum(int(s.get("items", 0)) for s in shards)
        seconds = sum(float(s.get("seconds", 0.0)) for s in shards)
        total = int(shards[0].get("total", 0))
        self.out.status.set(counts=LabelCounts(total=total, predicted=items),
                            predicted_text=f"{items}/{total}")
        if seconds > 0:
            self.out.status.set(items_per_second=round(items / seconds, 1))

    def summarize(self, summary: dict[str, Any]) -> None:
        counts = {field: int(summary[key]) for field, key in SUMMARY_COUNTS.items()
                  if summary.get(key) is not None}
        self.out.status.set(
            counts=LabelCounts(**counts),
            predicted_text=f"{summary.get('predicted', 0)}/{summary.get('total', 0)}")
        self.out.status.set(**{field: summary[key] for field, key in SUMMARY_FIELDS.items()
                               if summary.get(key) is not None})
        claim = output_claim_name(self.job)
        self.out.status.set(outputs=LabelOutputs(**{
            field: f"{claim}:{output_path(self.job, name)}"
            for field, name in OUTPUT_FILES.items()}))
        self.certification(summary)

    def certification(self, summary: dict[str, Any]) -> None:
        accept = self.spec.auto_accept
        if accept is None:
            return
        bound = float(summary.get("lowerBound") or 0.0)
        if summary.get("certified"):
            threshold = summary.get("threshold")
            where = f"score >= {threshold:.4f}" if isinstance(threshold, float) else "per class"
            self.cond("Certified", "True", "Certified",
                      f"precision >= {bound:.4f} at confidence {accept.confidence} for {where}")
            return
        if not any(c.type == "Certified" and c.status == "False" for c in self.conditions):
            self.event("NotCertified", "nothing auto-accepted: target precision not certified",
                       warning=True)
        self.cond("Certified", "False", "TargetNotCertified",
                  f"spec.autoAccept.targetPrecision {accept.target_precision} cannot be "
                  f"certified at confidence {accept.confidence} with "
                  f"{summary.get('humanLabeled', 0)} held-out label(s): best lower bound "
                  f"{bound:.4f}; nothing auto-accepted")


def reconcile(job: LabelJob, pods: list[LabelPod], model: ModelResolution, now: datetime,
              settings: RenderSettings, retraining: Retraining | None = None,
              hold: Hold | None = None) -> Actions:
    """Decide everything one pass does for `job` given its pods, its resolved model, (for
    review rounds) the TrainJobs that retrain it and what keeps it suspended (Kueue)."""
    return _Pass(job, pods, model, now, settings, retraining or Retraining(), hold).run()
