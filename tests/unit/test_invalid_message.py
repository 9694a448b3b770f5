"""What the operator writes when only it can tell a spec is invalid: the field path as the user
wrote it and the rule, in the user's words (no pydantic prefixes or model names)."""

from __future__ import annotations

from typing import Any

import pytest
from cogwork.api.trainjob import TrainJob
from cogwork.api.tunejob import TuneJob
from cogwork.controllers.runtime import invalid_message
from pydantic import ValidationError

TRAIN = {"metadata": {"name": "digits"},
         "spec": {"task": {"name": "image-classification"}, "data": {"dataset": "digits"}}}


def message(model: Any, doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(doc)
    return invalid_message(caught.value)


def test_a_field_rule_reads_path_then_rule() -> None:
    doc = {**TRAIN, "spec": {**TRAIN["spec"], "resources": {"cpu": "0"}}}
    assert message(TrainJob, doc) == "spec.resources.cpu: quantity must be positive, got '0'"


def test_list_items_are_indexed_as_written() -> None:
    doc = {"metadata": {"name": "search"},
           "spec": {"parameters": [{"name": "c", "env": "COGWORK_STEP",
                                    "categorical": {"values": ["1"]}}],
                    "trialTemplate": TRAIN["spec"]}}
    text = message(TuneJob, doc)
    assert text.startswith("spec.parameters[0]") and "COGWORK_STEP is reserved" in text
    assert "Value error" not in text


def test_a_rule_that_names_its_field_is_not_prefixed_twice() -> None:
    doc = {**TRAIN, "metadata": {"name": "x" * 60}}
    text = message(TrainJob, doc)
    assert text.startswith("metadata.name must be at most")
