"""Rendering sw-description from a release spec and the payloads' digests.

Layout (SWUpdate looks up ``software.<board>.<set>.<mode>`` first)::

    software = {
        version = "...";
        <machine> = {
            hardware-compatibility = [ ... ];
            stable = { copy1 = { images: (...); scripts: (...); bootenv: (...); };
                       copy2 = { ... }; };
        };
        sbom = { filename = "sbom.spdx.json"; sha256 = "..."; };   # if the spec has one
    };

``copy1`` is what a device running from slot A selects (``-e stable,copy1``);
it writes slot B and points the boot environment at B.  ``copy2`` mirrors it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .libconfig import Array, Group, List, render
from .sbom import SWDESC_KEY
from .spec import Artifact, Compression, Copy, Machine, ReleaseSpec, Script


@dataclass(frozen=True)
class PayloadInfo:
    """What sw-description records of a payload as it is stored in the bundle."""

    sha256: str
    ivt: str | None = None  # hex IV for an encrypted payload


def _image_entry(artifact: Artifact, info: PayloadInfo, target_fields: list[tuple[str, object]]) -> Group:
    settings: list[tuple[str, object]] = [
        ("filename", artifact.name),
        ("type", artifact.type.value),
        *target_fields,
    ]
    if artifact.compressed is not Compression.NONE:
        settings.append(("compressed", artifact.compressed.value))
    if artifact.encrypted:
        settings.append(("encrypted", True))
        assert info.ivt is not None
        settings.append(("ivt", info.ivt))
    if artifact.installed_directly:
        settings.append(("installed-directly", True))
    settings.append(("sha256", info.sha256))
    return Group(settings)


def _copy(spec: ReleaseSpec, copy: Copy, infos: Mapping[str, PayloadInfo]) -> Group:
    images = []
    for target in copy.targets:
        fields: list[tuple[str, object]] = []
        if target.device:
            fields.append(("device", target.device))
        if target.offset is not None:
            # SWUpdate's documented form, a string (parser.c reads it with ustrtoull, base 0): plain
            # decimal bytes, never a suffix or a leading zero whose meaning a reader could mistake.
            fields.append(("offset", str(target.offset)))
        if target.filesystem:
            fields.append(("filesystem", target.filesystem))
        if target.path:
            fields.append(("path", target.path))
        if target.source:
            fields.append(("properties", Group([("source", target.source)])))
        artifact = spec.artifact(target.artifact)
        images.append(_image_entry(artifact, infos[artifact.name], fields))
    settings: list[tuple[str, object]] = [("images", List(images))]
    if spec.scripts:
        settings.append(("scripts", List([_script_entry(s, infos[s.name]) for s in spec.scripts])))
    if copy.bootenv:
        settings.append(
            ("bootenv", List([Group([("name", k), ("value", v)]) for k, v in copy.bootenv]))
        )
    return Group(settings)


def _script_entry(script: Script, info: PayloadInfo) -> Group:
    return Group([("filename", script.name), ("type", script.type.value), ("sha256", info.sha256)])


def _machine(spec: ReleaseSpec, machine: Machine, infos: Mapping[str, PayloadInfo]) -> Group:
    modes = Group([(copy.mode, _copy(spec, copy, infos)) for copy in machine.copies])
    return Group([
        ("hardware-compatibility", Array(machine.hardware)),
        (spec.software_set, modes),
    ])


def render_sw_description(spec: ReleaseSpec, infos: Mapping[str, PayloadInfo]) -> bytes:
    """The sw-description bytes; ``infos`` maps each payload name to its digest."""
    settings: list[tuple[str, object]] = [("version", spec.version)]
    if spec.description:
        settings.append(("description", spec.description))
    settings.extend((m.name, _machine(spec, m, infos)) for m in spec.machines)
    if spec.sbom:
        # Signed with the rest, installed by nothing: no image names it.
        settings.append((SWDESC_KEY, Group([("filename", spec.sbom.name), ("sha256", infos[spec.sbom.name].sha256)])))
    return render("software", Group(settings)).encode("utf-8")
