"""What every labeling step's command line shares (kept free of heavy imports: score pods
start with it)."""

from __future__ import annotations

import argparse
import logging


def step_parser(module: str, summary_help: str = "the summary") -> argparse.ArgumentParser:
    """The command line of a step (`python -m <module>`), with logging set up and the
    --summary-to option every step that reports to the operator takes."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    parser.add_argument("--summary-to", default=None,
                        help=f"also write {summary_help} here as one JSON line (the "
                             "container's terminationMessagePath)")
    return parser
