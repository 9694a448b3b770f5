"""The Kopf-private names the operator's runtime depends on, pinned: a Kopf upgrade that renames
or drops one fails here, naming it, instead of silently keeping an event's whole body alive in
every reconcile loop (or losing what `kopf.event` needs)."""

from __future__ import annotations

import contextvars
import importlib
import pkgutil

import kopf
import pytest
from cogwork.controllers import runtime

# What a loop must keep from the context it starts in: kopf.event()'s posting queue and the
# operator's settings, and the credentials vault kube.py's requests log in with.
KEPT = {"event_queue_var", "event_queue_loop_var", "settings_var", "vault_var"}


def kopf_context_vars() -> dict[str, contextvars.ContextVar[object]]:
    """Every module-level ContextVar in Kopf's private modules, by its name."""
    found: dict[str, contextvars.ContextVar[object]] = {}
    for info in pkgutil.walk_packages(kopf.__path__, prefix="kopf."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, contextvars.ContextVar):
                found[value.name] = value
    return found


@pytest.fixture(scope="module")
def context_vars() -> dict[str, contextvars.ContextVar[object]]:
    return kopf_context_vars()


@pytest.mark.parametrize("name", sorted(runtime._KOPF_PER_EVENT_VARS))
def test_each_per_event_variable_the_loop_drops_exists(
        name: str, context_vars: dict[str, contextvars.ContextVar[object]]) -> None:
    assert name in context_vars, f"Kopf has no ContextVar {name!r} any more"


@pytest.mark.parametrize("name", sorted(KEPT))
def test_each_variable_the_loop_keeps_exists_and_is_not_dropped(
        name: str, context_vars: dict[str, contextvars.ContextVar[object]]) -> None:
    assert name in context_vars, f"Kopf has no ContextVar {name!r} any more"
    assert name not in runtime._KOPF_PER_EVENT_VARS
