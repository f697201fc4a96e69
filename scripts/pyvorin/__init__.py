"""pyvorin: release tooling for Pyvorin Edge devices running SWUpdate."""

__version__ = "0.1.0"
