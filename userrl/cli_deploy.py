"""Subcommands for deploying and inspecting: up, scale, status, episodes (see deploy/)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def register(sub: Any, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add this module's subcommands to the ``userrl`` parser."""
