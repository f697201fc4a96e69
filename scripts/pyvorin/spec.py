"""The release spec: a YAML file describing one OTA release.

The spec names each artifact once and says, per machine, where each of the two
A/B copies installs it.  See README.md ("Release spec") for the format; this
module turns the YAML into frozen dataclasses and rejects anything it does not
know, naming the key and its line.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SpecError
from .yamlsrc import Located, load_yaml

# libconfig setting names: a letter or '*', then letters, digits, '-', '_', '*'.
_SETTING_NAME = re.compile(r"^[A-Za-z][-A-Za-z0-9_]*$")
# A bundle member name: one path component, no separators, no dot-dot.
_MEMBER_NAME = re.compile(r"^[A-Za-z0-9_][-A-Za-z0-9_.+]*$")
# U-Boot variable names: no '=' and no whitespace.
_ENV_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
# A raw image's offset as a string: bytes, or KiB, MiB, GiB with a K, M or G suffix. SWUpdate reads
# the digits with strtoull(base 0), so a leading zero (octal there) is refused rather than guessed.
_OFFSET = re.compile(r"(0|[1-9][0-9]*)([KMG]?)")
_OFFSET_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
#: Offsets are whole sectors: block devices are addressed in 512-byte sectors, and a slot's layout (the
#: FIT window at its end) is too; an offset inside a sector is a slip (1000 for 1024), not a layout.
SECTOR = 512
#: SWUpdate seeks with lseek(2), whose off_t is signed 64-bit.
MAX_OFFSET = (1 << 63) - SECTOR

MODES = ("copy1", "copy2")


class ImageType(enum.Enum):
    RAW = "raw"
    RAWFILE = "rawfile"
    ARCHIVE = "archive"
    DELTA = "pyvdelta"  # a windowed delta, applied by our SWUpdate Lua handler


class Compression(enum.Enum):
    NONE = "none"
    ZLIB = "zlib"
    ZSTD = "zstd"


class ScriptType(enum.Enum):
    SHELLSCRIPT = "shellscript"  # called twice: "preinst" and "postinst"
    PREINSTALL = "preinstall"
    POSTINSTALL = "postinstall"
    LUA = "lua"


# What each compression's file must start with, so a flag cannot lie.
COMPRESSION_MAGIC = {
    Compression.ZLIB: (b"\x1f\x8b",),  # SWUpdate's "zlib" reads gzip streams
    Compression.ZSTD: (b"\x28\xb5\x2f\xfd",),
}


@dataclass(frozen=True)
class Artifact:
    """A file shipped in the bundle under ``name``."""

    name: str
    source: Path
    type: ImageType
    compressed: Compression = Compression.NONE
    encrypted: bool = False
    installed_directly: bool = False


@dataclass(frozen=True)
class Script:
    name: str
    source: Path
    type: ScriptType


@dataclass(frozen=True)
class SbomFile:
    """The image's SBOM (``source``), shipped as one SPDX document under ``name``, never installed."""

    name: str
    source: Path


#: What an SBOM may be (create-spdx deploys <image>.spdx.tar.zst), and the member it becomes: one
#: self-contained SPDX document (pyvorin.sbom).
SBOM_SUFFIXES = (".spdx.json", ".spdx.tar", ".spdx.tar.zst")
SBOM_MEMBER = "sbom.spdx.json"


@dataclass(frozen=True)
class Target:
    """Where one copy installs one artifact."""

    artifact: str
    device: str | None = None
    path: str | None = None
    filesystem: str | None = None
    source: str | None = None  # pyvdelta: the active slot the delta applies to
    offset: int | None = None  # raw: where on ``device`` the image starts, in bytes


@dataclass(frozen=True)
class Copy:
    """One software-set mode: selected when running from one slot, writes the other."""

    mode: str
    targets: tuple[Target, ...]
    bootenv: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Machine:
    name: str
    hardware: tuple[str, ...]
    copies: tuple[Copy, ...]


@dataclass(frozen=True)
class ReleaseSpec:
    path: Path
    version: str
    description: str
    software_set: str
    artifacts: tuple[Artifact, ...]
    scripts: tuple[Script, ...]
    machines: tuple[Machine, ...]
    sbom: SbomFile | None = None

    def artifact(self, name: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        raise KeyError(name)

    @property
    def payloads(self) -> tuple[Artifact | Script | SbomFile, ...]:
        """Everything shipped after sw-description, in bundle order (the SBOM last)."""
        return (*self.artifacts, *self.scripts, *((self.sbom,) if self.sbom else ()))


class _Ctx:
    """Carries the file name so every error names file and line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: Located | None, key: str | None, message: str) -> SpecError:
        line = node.where(key) if node is not None else 0
        where = f"{self.path}:{line}" if line else str(self.path)
        return SpecError(f"{where}: {message}")

    def keys(self, node: Located, allowed: Iterable[str], required: Iterable[str], what: str) -> None:
        allowed = set(allowed)
        for key in node:
            if key not in allowed:
                raise self.fail(node, key, f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(allowed))})")
        for key in required:
            if key not in node:
                raise self.fail(node, None, f"{what} is missing required key {key!r}")

    def mapping(self, parent: Located, key: str, what: str) -> Located:
        value = parent[key]
        if not isinstance(value, Located):
            raise self.fail(parent, key, f"{what} must be a mapping")
        return value

    def string(self, parent: Located, key: str, what: str, *, allow_int: bool = False) -> str:
        value = parent[key]
        if allow_int and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value:
            raise self.fail(parent, key, f"{what} must be a non-empty string")
        if "\x00" in value:
            raise self.fail(parent, key, f"{what} must not contain NUL")
        return value

    def boolean(self, parent: Located, key: str, default: bool) -> bool:
        if key not in parent:
            return default
        value = parent[key]
        if not isinstance(value, bool):
            raise self.fail(parent, key, f"{key} must be true or false")
        return value

    def enum(self, parent: Located, key: str, kind: type[enum.Enum], default: Any = None) -> Any:
        if key not in parent:
            if default is None:
                raise self.fail(parent, None, f"missing required key {key!r}")
            return default
        value = parent[key]
        for member in kind:
            if member.value == value:
                return member
        choices = ", ".join(m.value for m in kind)
        raise self.fail(parent, key, f"{key} {value!r} is not one of: {choices}")


def member_name_ok(name: str) -> bool:
    return bool(_MEMBER_NAME.match(name)) and ".." not in name and name not in {"sw-description", "sw-description.sig"}


def _artifact(ctx: _Ctx, name: str, node: Any, parent: Located, base: Path) -> Artifact:
    if not member_name_ok(name):
        raise ctx.fail(parent, name, f"artifact name {name!r} must be a plain file name (no '/', no '..', not sw-description)")
    if not isinstance(node, Located):
        raise ctx.fail(parent, name, f"artifact {name!r} must be a mapping with at least 'file' and 'type'")
    ctx.keys(node, {"file", "type", "compressed", "encrypted", "installed-directly"}, {"file", "type"}, f"artifact {name!r}")
    artifact = Artifact(
        name=name,
        source=base / ctx.string(node, "file", "file"),
        type=ctx.enum(node, "type", ImageType),
        compressed=ctx.enum(node, "compressed", Compression, Compression.NONE),
        encrypted=ctx.boolean(node, "encrypted", False),
        installed_directly=ctx.boolean(node, "installed-directly", False),
    )
    if artifact.type is ImageType.ARCHIVE and artifact.compressed is not Compression.NONE:
        raise ctx.fail(node, "compressed", "archive images are decompressed by libarchive; drop 'compressed'")
    if artifact.type is ImageType.DELTA and (artifact.compressed is not Compression.NONE or artifact.installed_directly):
        raise ctx.fail(node, None, "pyvdelta artifacts are applied from a file: drop 'compressed' and 'installed-directly'")
    return artifact


def _script(ctx: _Ctx, index: int, node: Any, parent: Located, base: Path) -> Script:
    if not isinstance(node, Located):
        raise ctx.fail(parent, "scripts", f"scripts[{index}] must be a mapping with 'file' and 'type'")
    ctx.keys(node, {"file", "type", "name"}, {"file", "type"}, f"scripts[{index}]")
    source = base / ctx.string(node, "file", "file")
    name = ctx.string(node, "name", "name") if "name" in node else source.name
    if not member_name_ok(name):
        raise ctx.fail(node, "name" if "name" in node else "file", f"script name {name!r} must be a plain file name")
    return Script(name=name, source=source, type=ctx.enum(node, "type", ScriptType))


def _bootenv(ctx: _Ctx, parent: Located, key: str) -> tuple[tuple[str, str], ...]:
    if key not in parent:
        return ()
    node = ctx.mapping(parent, key, "bootenv")
    result = []
    for name in node:
        if not _ENV_NAME.match(name):
            raise ctx.fail(node, name, f"bootenv name {name!r} is not a valid U-Boot variable name")
        value = node[name]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ctx.fail(node, name, f"bootenv {name!r} must be a string or an integer")
        result.append((name, str(value)))
    return tuple(result)


def device_start(target: Target, artifact: Artifact) -> int | None:
    """Where ``target`` starts writing its device's bytes; None when it writes files, not the device.

    A pyvdelta rebuilds a slot image from the device's first byte, as a raw image without offset does."""
    if target.device and artifact.type in (ImageType.RAW, ImageType.DELTA):
        return target.offset or 0
    return None


def _offset(ctx: _Ctx, node: Located, name: str) -> int:
    """``offset``: a whole number of bytes, or a string with a K/M/G (KiB/MiB/GiB) suffix."""
    value = node["offset"]
    if isinstance(value, str):
        match = _OFFSET.fullmatch(value)
        if not match:
            raise ctx.fail(node, "offset", f"offset {value!r} of {name!r} is not a number of bytes, "
                                           "optionally with a K, M or G suffix (KiB, MiB, GiB), like '64M'")
        digits, unit = match.groups()
        # No offset in range has 20 digits: longer strings are out of range without int() converting them.
        value = int(digits) * _OFFSET_UNITS[unit] if len(digits) < 20 else MAX_OFFSET + 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.fail(node, "offset", f"offset of {name!r} must be a whole number of bytes or a string like '64M'")
    # Range first: the value of a number out of range is not worth printing (it may be thousands of digits).
    if value < 0:
        raise ctx.fail(node, "offset", f"offset of {name!r} must not be negative")
    if value > MAX_OFFSET:
        raise ctx.fail(node, "offset", f"offset of {name!r} is past what SWUpdate's lseek can reach (2^63 bytes)")
    if value % SECTOR:
        raise ctx.fail(node, "offset", f"offset {value} of {name!r} is not a multiple of {SECTOR}: "
                                       f"block devices are written in {SECTOR}-byte sectors")
    return value


def _target(ctx: _Ctx, copy: Located, name: str, value: Any, artifact: Artifact) -> Target:
    if isinstance(value, str) and value:
        if artifact.type is ImageType.DELTA:
            raise ctx.fail(copy, name, f"delta {name!r} needs a mapping: {{device: <inactive slot>, source: <active slot>}}")
        if artifact.type is ImageType.RAW:
            return Target(name, device=value)
        return Target(name, path=value)
    if not isinstance(value, Located):
        raise ctx.fail(copy, name, f"target of {name!r} must be a device/path string or a mapping")
    if "offset" in value and artifact.type is not ImageType.RAW:
        raise ctx.fail(value, "offset", f"offset is for raw images (SWUpdate's raw handler seeks to it); "
                                        f"{name!r} is {artifact.type.value}")
    allowed = {"device", "source"} if artifact.type is ImageType.DELTA else {"device", "path", "filesystem"}
    if artifact.type is ImageType.RAW:
        allowed.add("offset")
    ctx.keys(value, allowed, (), f"target of {name!r}")
    target = Target(
        name,
        device=ctx.string(value, "device", "device") if "device" in value else None,
        path=ctx.string(value, "path", "path") if "path" in value else None,
        filesystem=ctx.string(value, "filesystem", "filesystem") if "filesystem" in value else None,
        source=ctx.string(value, "source", "source") if "source" in value else None,
        offset=_offset(ctx, value, name) if "offset" in value else None,
    )
    if artifact.type is ImageType.DELTA:
        if not target.device or not target.source:
            raise ctx.fail(value, None, f"delta {name!r} needs 'device' (inactive slot) and 'source' (active slot)")
        if target.device == target.source:
            raise ctx.fail(value, "source", f"delta {name!r}: source and device are the same slot")
        return target
    if artifact.type is ImageType.RAW and not target.device:
        raise ctx.fail(value, None, f"raw image {name!r} needs a 'device'")
    if artifact.type is not ImageType.RAW and not target.path:
        raise ctx.fail(value, None, f"{artifact.type.value} image {name!r} needs a 'path'")
    if target.device and artifact.type is not ImageType.RAW and not target.filesystem:
        raise ctx.fail(value, None, f"{name!r} installs into a device: give its 'filesystem' so SWUpdate can mount it")
    return target


def _machine(ctx: _Ctx, name: str, node: Any, parent: Located, spec_artifacts: dict[str, Artifact]) -> Machine:
    if not _SETTING_NAME.match(name):
        raise ctx.fail(parent, name, f"machine name {name!r} must start with a letter and use letters, digits, '-', '_'")
    if not isinstance(node, Located):
        raise ctx.fail(parent, name, f"machine {name!r} must be a mapping")
    ctx.keys(node, {"hardware-compatibility", "bootenv", *MODES}, {"hardware-compatibility", *MODES}, f"machine {name!r}")
    hardware = node["hardware-compatibility"]
    if not isinstance(hardware, list) or not hardware:
        raise ctx.fail(node, "hardware-compatibility", "hardware-compatibility must be a non-empty list of revisions")
    revisions = []
    for rev in hardware:
        if isinstance(rev, bool) or not isinstance(rev, (str, int, float)) or not str(rev).strip():
            raise ctx.fail(node, "hardware-compatibility", f"hardware revision {rev!r} must be a string")
        revisions.append(str(rev))
    common_env = _bootenv(ctx, node, "bootenv")
    copies = []
    for mode in MODES:
        copy = ctx.mapping(node, mode, f"{name}.{mode}")
        ctx.keys(copy, {"install", "bootenv"}, {"install"}, f"{name}.{mode}")
        install = ctx.mapping(copy, "install", f"{name}.{mode}.install")
        targets = []
        for artifact_name, value in install.items():
            if artifact_name not in spec_artifacts:
                raise ctx.fail(install, artifact_name, f"{name}.{mode} installs unknown artifact {artifact_name!r}")
            targets.append(_target(ctx, install, artifact_name, value, spec_artifacts[artifact_name]))
        if not targets:
            raise ctx.fail(copy, "install", f"{name}.{mode} installs nothing")
        _check_shared_devices(ctx, install, f"{name}.{mode}", targets, spec_artifacts)
        own_env = _bootenv(ctx, copy, "bootenv")
        merged = dict(common_env)
        merged.update(own_env)
        copies.append(Copy(mode, tuple(targets), tuple(merged.items())))
    _check_ab(ctx, node, name, copies)
    return Machine(name=name, hardware=tuple(revisions), copies=tuple(copies))


def _check_shared_devices(ctx: _Ctx, install: Located, where: str, targets: list[Target],
                          artifacts: dict[str, Artifact]) -> None:
    """Two images of one copy may write one device only from different offsets: from the same one,
    the second overwrites the first.  Whether each also ends before the next one starts is known
    only from the files' sizes, so ``pyvorin bundle`` checks that (pyvorin.layout)."""
    starts: dict[tuple[str, int], str] = {}
    for target in targets:
        start = device_start(target, artifacts[target.artifact])
        if start is None:
            continue
        assert target.device is not None
        other = starts.setdefault((target.device, start), target.artifact)
        if other != target.artifact:
            raise ctx.fail(install, target.artifact,
                           f"{where}: {other!r} and {target.artifact!r} both write {target.device} from offset "
                           f"{start}; one of them needs an 'offset' past the end of the other")


def _check_ab(ctx: _Ctx, node: Located, machine: str, copies: list[Copy]) -> None:
    """copy1 and copy2 must write different slots, or an update overwrites the running system."""
    first, second = copies
    for target in first.targets:
        for other in second.targets:
            # Only raw images overwrite a whole slot; archives may share a data partition.
            same_slot = target.device and target.device == other.device and not (target.path or other.path)
            if target.artifact == other.artifact and same_slot:
                raise ctx.fail(
                    node, "copy2",
                    f"{machine}: copy1 and copy2 both write {target.artifact!r} to {target.device}; "
                    "each copy must write the other slot",
                )


def load_spec(path: Path) -> ReleaseSpec:
    """Load and validate a release spec; file paths resolve against its directory."""
    path = Path(path)
    ctx = _Ctx(path)
    root = load_yaml(path, "release spec")
    ctx.keys(root, {"version", "description", "software-set", "artifacts", "scripts", "machines", "sbom"},
             {"version", "artifacts", "machines"}, "the release spec")
    base = path.resolve().parent
    version = ctx.string(root, "version", "version", allow_int=True)
    if not re.match(r"^[0-9A-Za-z][0-9A-Za-z.+~_-]*$", version):
        raise ctx.fail(root, "version", f"version {version!r} must be a dotted version like 2026.11.0")
    software_set = ctx.string(root, "software-set", "software-set") if "software-set" in root else "stable"
    if not _SETTING_NAME.match(software_set):
        raise ctx.fail(root, "software-set", f"software-set {software_set!r} is not a valid name")
    artifacts_node = ctx.mapping(root, "artifacts", "artifacts")
    if not artifacts_node:
        raise ctx.fail(root, "artifacts", "artifacts must list at least one artifact")
    artifacts = {n: _artifact(ctx, n, v, artifacts_node, base) for n, v in artifacts_node.items()}
    scripts_node = root.get("scripts", [])
    if not isinstance(scripts_node, list):
        raise ctx.fail(root, "scripts", "scripts must be a list")
    scripts = tuple(_script(ctx, i, s, root, base) for i, s in enumerate(scripts_node))
    sbom = None
    if "sbom" in root:
        source = base / ctx.string(root, "sbom", "sbom")
        if not source.name.endswith(SBOM_SUFFIXES):
            raise ctx.fail(root, "sbom", f"sbom {source.name!r} must be an SPDX document (.spdx.json) or "
                                         "create-spdx's archive (.spdx.tar.zst)")
        sbom = SbomFile(SBOM_MEMBER, source)
    names = [a for a in artifacts] + [s.name for s in scripts] + ([sbom.name] if sbom else [])
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ctx.fail(root, "scripts", f"bundle member name used twice: {sorted(duplicates)[0]!r}")
    machines_node = ctx.mapping(root, "machines", "machines")
    if not machines_node:
        raise ctx.fail(root, "machines", "machines must list at least one machine")
    machines = tuple(_machine(ctx, n, v, machines_node, artifacts) for n, v in machines_node.items())
    return ReleaseSpec(
        path=path,
        version=version,
        description=ctx.string(root, "description", "description") if "description" in root else "",
        software_set=software_set,
        artifacts=tuple(artifacts.values()),
        scripts=scripts,
        machines=machines,
        sbom=sbom,
    )
