"""Errors raised by the simulated kernel."""

from __future__ import annotations


class KernelError(ValueError):
    """An operation the simulated kernel refuses (bad address, unknown mapping, ...)."""
