"""The error hierarchy.

Library code raises these; only :func:`pyvorin.cli.main` turns them into an
exit code and one line on stderr.  Every message names the thing that is wrong
(a file, a key, a spec line) so that the one line is enough to act on.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class PyvorinError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, bad key)."""


class SpecError(PyvorinError):
    """The release spec is malformed or inconsistent."""


class KeyError_(PyvorinError):
    """A key or certificate is missing, of the wrong type, locked or unsafe."""


class BundleError(PyvorinError):
    """A bundle cannot be built or read."""


class SigningError(PyvorinError):
    """Producing a signature failed (bad key, token error)."""


class VerificationError(PyvorinError):
    """A bundle or signature did not verify.  The message names the first problem."""


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the file(s) it names and the system's reason."""
    reason = exc.strerror or str(exc)
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def one_line(message: object) -> str:
    """*message* as one printable line: a name or value from hostile input may
    carry newlines or control characters, which are shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))


class UsageParser(argparse.ArgumentParser):
    """Usage errors in one line too, naming where the help is (subcommands inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")
