"""The subcommands of ``tiledehaze``; each module registers one (``register(sub)``) and runs it."""

from __future__ import annotations

import argparse


def add_command(sub, name: str, *, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with ``examples``, laid out as written."""
    return sub.add_parser(name, help=help, description=description, epilog=examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
