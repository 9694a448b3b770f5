"""`cogwork` command: run a manifest locally, render what the operator would create, print CRDs,
or run the operator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml


def _load(path: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def cmd_render(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from cogwork.local.exits import EXIT_INVALID, validation_message
    from cogwork.local.render import render_document

    out: list[dict[str, Any]] = []
    for doc in _load(args.file):
        try:
            out.extend(render_document(doc))
        except ValidationError as err:
            print(validation_message(str(doc.get("kind")), err), file=sys.stderr)
            return EXIT_INVALID
        except ValueError as err:
            print(f"cogwork render: {err}", file=sys.stderr)
            return EXIT_INVALID
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cogwork.local.dispatch import run_document

    code = 0
    for doc in _load(args.file):
        code = code or run_document(doc, workdir=Path(args.workdir) if args.workdir else None)
    return code


def cmd_crds(args: argparse.Namespace) -> int:
    from cogwork.api.crdgen import render_crds

    for _, text in sorted(render_crds().items()):
        sys.stdout.write("---\n" + text)
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    from cogwork.controllers.operator import run

    run(namespaces=args.namespace or None, liveness=args.liveness)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cogwork", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="print the objects the operator would create")
    render.add_argument("-f", "--file", required=True, help="manifest file, or - for stdin")
    render.set_defaults(func=cmd_render)
    run = sub.add_parser("run", help="run a manifest on this machine, no cluster needed")
    run.add_argument("-f", "--file", required=True, help="manifest file, or - for stdin")
    run.add_argument("--workdir", help="where checkpoints and outputs go (default: a temp dir)")
    run.set_defaults(func=cmd_run)
    crds = sub.add_parser("crds", help="print the CustomResourceDefinitions")
    crds.set_defaults(func=cmd_crds)
    op = sub.add_parser("operator", help="run the operator (Kopf)")
    op.add_argument("-n", "--namespace", action="append", help="watch only these namespaces")
    op.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                    help="Kopf liveness endpoint")
    op.set_defaults(func=cmd_operator)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
