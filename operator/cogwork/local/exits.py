"""What every local runner shares: exit codes and how an invalid manifest is said."""

from __future__ import annotations

from pydantic import ValidationError

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
