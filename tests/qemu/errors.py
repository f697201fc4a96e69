"""The one error the harness raises; tests assert, the harness raises."""

from __future__ import annotations


class HarnessError(RuntimeError):
    """A build or run step of the QEMU harness failed (not a scenario verdict)."""
