"""An isolated SoftHSM2 token for tests of PKCS#11 signing.

Every token lives under a directory the caller owns (normally a pytest
``tmp_path``): :func:`create_token` writes ``softhsm2.conf`` there with its own
``tokendir`` and every SoftHSM command runs with ``SOFTHSM2_CONF`` pointing at
it, so the system token directory (``/var/lib/softhsm/tokens``) is never read
or written.  Subprocesses that use the token (``pyvorin``, ``pkcs11-tool``)
must be run with :attr:`SoftHsmToken.env`.

Typical use::

    reason = softhsm_available()
    if reason:
        pytest.skip(reason)
    token = create_token(tmp_path / "hsm", label="ci", pin="735129")
    token.import_key(Path("signer.key"), label="swu-signer", object_id=b"\\x5a\\x01")
    subprocess.run(["pyvorin", "bundle", ..., "--key", token.uri("swu-signer")], env=token.env)

:func:`softhsm_available` returns a reason to skip when ``softhsm2-util``, the
SoftHSM2 module or python-pkcs11 is missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

__all__ = ["MODULE_CANDIDATES", "SoftHsmToken", "create_token", "find_module", "softhsm_available"]

# Where Debian, Fedora and source builds put the module; $SOFTHSM2_MODULE wins.
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
CONF_NAME = "softhsm2.conf"
_TIMEOUT = 60


def find_module() -> str | None:
    """The path of libsofthsm2.so, or None."""
    candidates = [os.environ.get("SOFTHSM2_MODULE", ""), *MODULE_CANDIDATES]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def softhsm_available() -> str | None:
    """None when SoftHSM2 tests can run, else why not (for pytest.skip)."""
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util not found (apt install softhsm2)"
    if find_module() is None:
        return "libsofthsm2.so not found (apt install softhsm2, or set SOFTHSM2_MODULE)"
    if importlib.util.find_spec("pkcs11") is None:
        return "python-pkcs11 not installed (pip install 'pyvorin[pkcs11]')"
    return None


def _run(args: list[str], env: Mapping[str, str]) -> str:
    result = subprocess.run(args, env=dict(env), capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip() or result.stdout}")
    return result.stdout


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


@dataclass(frozen=True)
class SoftHsmToken:
    """One initialised token in an isolated SoftHSM2 directory.

    ``env`` is the calling process's environment with ``SOFTHSM2_CONF`` set to
    this token's configuration (and the pyvorin PKCS#11 variables removed, so
    a test only gets what it passes explicitly).
    """

    directory: Path
    module: str
    label: str
    pin: str
    so_pin: str
    serial: str
    slot_id: int
    env: Mapping[str, str] = field(compare=False, hash=False, repr=False)

    @property
    def conf(self) -> Path:
        return self.directory / CONF_NAME

    def uri(
        self,
        label: str | None,
        pin_source: Path | str | None = None,
        *,
        object_id: bytes | None = None,
        pin: str | None = None,
        token: str | None = None,
        module: bool = True,
        with_pin: bool = True,
    ) -> str:
        """An RFC 7512 URI naming the private key ``label`` in this token.

        The PIN is ``pin-value`` (``pin`` overrides this token's PIN) unless
        ``pin_source`` names a PIN file; ``with_pin=False`` leaves it out and
        ``module=False`` leaves out ``module-path`` (for the environment
        variables).  ``token`` overrides the token label.
        """
        path = [f"token={_quote(self.label if token is None else token)}"]
        if label is not None:
            path.append(f"object={_quote(label)}")
        if object_id is not None:
            path.append("id=" + "".join(f"%{b:02X}" for b in object_id))
        path.append("type=private")
        query = []
        if module:
            query.append(f"module-path={urllib.parse.quote(self.module, safe='/')}")
        if with_pin:
            if pin_source is not None:
                query.append(f"pin-source={urllib.parse.quote(str(pin_source), safe='/')}")
            else:
                query.append(f"pin-value={_quote(self.pin if pin is None else pin)}")
        return "pkcs11:" + ";".join(path) + ("?" + "&".join(query) if query else "")

    def import_key(self, key: Path | bytes, label: str, object_id: bytes) -> None:
        """Import a private key (PEM or DER file, or PEM bytes; RSA or EC) with ``label`` and ``object_id``.

        softhsm2-util --import wants unencrypted PKCS#8 PEM, so the key is
        re-encoded into a private temporary file next to the token first.
        """
        data = key.read_bytes() if isinstance(key, Path) else key
        loader = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
        private = loader(data, password=None)
        pkcs8 = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        staging = self.directory / f"import-{object_id.hex()}.pem"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pkcs8)
            _run(
                ["softhsm2-util", "--import", str(staging), "--token", self.label, "--label", label,
                 "--id", object_id.hex(), "--pin", self.pin],
                self.env,
            )
        finally:
            staging.unlink()

    def list_objects(self) -> str:
        """pkcs11-tool's listing of the token's objects (after login), for diagnostics.

        The token is named by slot: pkcs11-tool's --token-label also matches
        labels that merely start with the given one.
        """
        return _run(
            ["pkcs11-tool", "--module", self.module, "--slot", str(self.slot_id), "--login", "--pin", self.pin, "-O"],
            self.env,
        )


def _slots(env: Mapping[str, str]) -> list[dict[str, str]]:
    """softhsm2-util --show-slots as one dict per slot: slot, label, serial, initialized."""
    slots: list[dict[str, str]] = []
    for line in _run(["softhsm2-util", "--show-slots"], env).splitlines():
        header = re.match(r"^Slot (\d+)$", line.strip())
        if header and not line.startswith(" "):
            slots.append({"slot": header.group(1)})
            continue
        item = re.match(r"^\s+(Label|Serial number|Initialized):\s*(.*?)\s*$", line)
        if item and slots:
            slots[-1].setdefault(item.group(1).lower(), item.group(2))
    return slots


def create_token(
    directory: Path,
    label: str = "pyvorin-ci",
    pin: str = "735129",
    so_pin: str = "86420135",
) -> SoftHsmToken:
    """Initialise a token ``label`` in an isolated SoftHSM2 store under ``directory``.

    The first call creates ``directory/softhsm2.conf`` and ``directory/tokens``;
    later calls with the same directory add further tokens to the same store.
    """
    reason = softhsm_available()
    if reason is not None:
        raise RuntimeError(reason)
    module = find_module()
    assert module is not None
    directory = directory.resolve()
    tokendir = directory / "tokens"
    tokendir.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = directory / CONF_NAME
    if not conf.exists():
        conf.write_text(
            f"directories.tokendir = {tokendir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYVORIN_PKCS11_")}
    env["SOFTHSM2_CONF"] = str(conf)
    if any(s.get("label") == label and s.get("initialized") == "yes" for s in _slots(env)):
        raise ValueError(f"{directory}: a token labelled {label!r} already exists")
    _run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        env,
    )
    found = [s for s in _slots(env) if s.get("label") == label and s.get("initialized") == "yes"]
    if len(found) != 1:
        raise RuntimeError(f"{directory}: token {label!r} not found after --init-token: {found}")
    return SoftHsmToken(
        directory=directory,
        module=module,
        label=label,
        pin=pin,
        so_pin=so_pin,
        serial=found[0]["serial number"],
        slot_id=int(found[0]["slot"]),
        env=env,
    )
