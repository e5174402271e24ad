"""Verbs for baselines: ``render``, ``baseline validate``, ``baseline schema``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declared in the foundation work; the verbs arrive with the baseline package."""
