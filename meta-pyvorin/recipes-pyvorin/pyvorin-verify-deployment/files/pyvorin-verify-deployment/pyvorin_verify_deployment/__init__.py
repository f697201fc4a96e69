"""pyvorin-verify-deployment: the operator's go-live checklist for a Pyvorin Edge
device, run on the device.  Every check reads through a Context (a root
prefix for files, a runner for commands), so each one is tested against a
passing and a failing fixture off the device."""

__version__ = "1.0.0"
