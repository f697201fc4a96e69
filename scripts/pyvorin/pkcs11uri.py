"""RFC 7512 PKCS#11 URIs: ``pkcs11:token=ci;object=swu-signer?pin-source=/run/pin``."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from .errors import KeyError_

_PATH_ATTRS = frozenset(
    {
        "token", "manufacturer", "serial", "model", "library-manufacturer",
        "library-description", "library-version", "object", "type", "id",
        "slot-id", "slot-manufacturer", "slot-description",
    }
)
_QUERY_ATTRS = frozenset({"pin-value", "pin-source", "module-name", "module-path"})


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parsed attributes; ``id`` is raw bytes, everything else text."""

    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    object_id: bytes | None = None

    @property
    def token(self) -> str | None:
        return self.path.get("token")

    @property
    def label(self) -> str | None:
        return self.path.get("object")

    def redacted(self) -> str:
        """The URI without a PIN value, for messages and logs."""
        parts = [f"{k}={urllib.parse.quote(v, safe='')}" for k, v in self.path.items()]
        if self.object_id is not None:
            parts.append("id=" + "".join(f"%{b:02X}" for b in self.object_id))
        query = [f"{k}={urllib.parse.quote(v, safe='/')}" for k, v in self.query.items() if k != "pin-value"]
        return "pkcs11:" + ";".join(parts) + ("?" + "&".join(query) if query else "")


def is_pkcs11_uri(text: str) -> bool:
    return text.startswith("pkcs11:")


def parse(text: str) -> Pkcs11Uri:
    """Parse a PKCS#11 URI, rejecting attributes RFC 7512 does not define."""
    if not is_pkcs11_uri(text):
        raise KeyError_(f"not a PKCS#11 URI (must start with 'pkcs11:'): {text!r}")
    rest = text[len("pkcs11:") :]
    path_part, _, query_part = rest.partition("?")
    path: dict[str, str] = {}
    object_id: bytes | None = None
    for item in filter(None, path_part.split(";")):
        name, sep, value = item.partition("=")
        if not sep or name not in _PATH_ATTRS:
            raise KeyError_(f"PKCS#11 URI: unknown path attribute {name!r}")
        if name in path or (name == "id" and object_id is not None):
            raise KeyError_(f"PKCS#11 URI: attribute {name!r} given twice")
        if name == "id":
            object_id = urllib.parse.unquote_to_bytes(value)
        else:
            path[name] = urllib.parse.unquote(value)
    query: dict[str, str] = {}
    for item in filter(None, query_part.split("&")):
        name, sep, value = item.partition("=")
        if not sep or name not in _QUERY_ATTRS:
            raise KeyError_(f"PKCS#11 URI: unknown query attribute {name!r}")
        query[name] = urllib.parse.unquote(value)
    if "type" in path and path["type"] != "private":
        raise KeyError_(f"PKCS#11 URI: type={path['type']} cannot sign; use type=private")
    return Pkcs11Uri(path=path, query=query, object_id=object_id)
