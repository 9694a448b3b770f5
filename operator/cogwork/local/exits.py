"""What every local runner shares: exit codes and how an invalid manifest is said."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TextIO, TypeVar

from pydantic import BaseModel, ValidationError

from cogwork.api.common import problem_message

EXIT_INVALID = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def validation_message(kind: str, error: ValidationError) -> str:
    """One line per problem, each naming the field (`spec.nodes.min: ...`), in the words the
    operator writes into the InvalidSpec condition."""
    lines = [f"invalid {kind} manifest:"]
    lines += [f"  {problem_message(problem)}" for problem in error.errors()]
    return "\n".join(lines)


ModelT = TypeVar("ModelT", bound=BaseModel)


def parsed(model: type[ModelT], doc: Mapping[str, Any], out: TextIO) -> ModelT | None:
    """`doc` as `model`, or None after saying what is wrong with it."""
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        print(validation_message(model.__name__, e), file=out, flush=True)
        return None
