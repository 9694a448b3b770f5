"""Kopf controllers. Importing this package sets Kopf up without the official client.

Kopf imports the kubernetes client's models whenever the package is installed, only to
recognise them in isinstance checks, and its default registry probes for the client to pick a
login handler. The operator hands Kopf no such models and logs in itself (`kube.login`), so it
skips both: 40 MB of the operator's memory.
"""

import sys

if "kopf" not in sys.modules and "kubernetes" not in sys.modules:
    sys.modules["kubernetes"] = None  # type: ignore[assignment]  # makes Kopf's try-import fail
    try:
        import kopf
    finally:
        del sys.modules["kubernetes"]  # a later import (kube.login's fallback) works as usual
    # A plain registry: no fallback login handlers, so nothing probes for the client.
    kopf.set_default_registry(kopf.OperatorRegistry())
