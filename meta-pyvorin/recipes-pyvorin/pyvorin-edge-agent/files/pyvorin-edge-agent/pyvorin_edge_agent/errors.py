"""The agent's error hierarchy: the CLI maps each to one line on stderr and an
exit status, so no caller needs to print a traceback."""

from __future__ import annotations


class AgentError(Exception):
    """A failure the operator can act on; the message is the whole story."""

    exit_code = 1


class ConfigError(AgentError):
    """config.toml cannot be read, is not TOML, or holds a wrong key or value."""

    exit_code = 2


class StorageError(AgentError):
    """The data directory or a database cannot be used."""


class BackupError(AgentError):
    """A backup could not be written, or one on disk is damaged."""
