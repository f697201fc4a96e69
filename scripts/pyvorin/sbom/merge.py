"""One self-contained SPDX document for a release, from create-spdx's many.

create-spdx (scarthgap, SPDX 2.2) writes the image's document with one
package, the image, which ``CONTAINS`` each installed package by reference
into that package's own document (``DocumentRef-<doc>:SPDXRef-<package>``,
resolved through ``externalDocumentRefs``). It says nothing ``DESCRIBES``
the image, so checkers find no root and no components in it (the NTIA
minimum-elements checker fails it). The release's document is the image
document with each contained package copied in as its document states it
(supplier, licenses, checksums, CPE references) and the license texts those
name, the image ``DESCRIBES``-d and ``CONTAINS``-ing each package.

Documents are reduced as they are read (their file lists dropped), so memory
grows with the number of packages, not with the size of the archive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .stream import SbomError

#: What a package keeps from its document: the files it lists are not carried.
_DROPPED = ("hasFiles", "packageVerificationCode")
_LICENSE_REF = re.compile(r"LicenseRef-[A-Za-z0-9.-]+")


@dataclass(frozen=True)
class _Doc:
    """What the merge needs of one document."""

    name: str
    namespace: str
    spdx_version: str
    creation: Mapping[str, Any]
    refs: Mapping[str, str]  # DocumentRef-ID -> namespace
    packages: Mapping[str, Mapping[str, Any]]  # SPDXID -> package
    relationships: tuple[tuple[str, str, str], ...]
    described: tuple[str, ...]
    licenses: Mapping[str, Mapping[str, Any]]  # LicenseRef-ID -> extracted licensing info


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def reduce(doc: Mapping[str, Any]) -> _Doc:
    """A parsed document, without what the merge does not need."""
    refs = {r["externalDocumentId"]: r["spdxDocument"] for r in _dicts(doc.get("externalDocumentRefs"))
            if isinstance(r.get("externalDocumentId"), str) and isinstance(r.get("spdxDocument"), str)}
    packages = {}
    for package in _dicts(doc.get("packages")):
        if isinstance(package.get("SPDXID"), str):
            packages[package["SPDXID"]] = {k: v for k, v in package.items() if k not in _DROPPED}
    relationships = []
    for entry in _dicts(doc.get("relationships")):
        parts = (entry.get("spdxElementId"), entry.get("relationshipType"), entry.get("relatedSpdxElement"))
        if all(isinstance(p, str) for p in parts) and parts[1] in ("CONTAINS", "DESCRIBES"):
            relationships.append((str(parts[0]), str(parts[1]), str(parts[2])))
    described = tuple(r[2] for r in relationships if r[0] == "SPDXRef-DOCUMENT" and r[1] == "DESCRIBES")
    described += tuple(_strings(doc.get("documentDescribes")))
    licenses = {info["licenseId"]: info for info in _dicts(doc.get("hasExtractedLicensingInfos"))
                if isinstance(info.get("licenseId"), str)}
    creation = doc.get("creationInfo")
    return _Doc(str(doc.get("name", "")), str(doc["documentNamespace"]), str(doc["spdxVersion"]),
                creation if isinstance(creation, dict) else {}, refs, packages, tuple(relationships), described,
                licenses)


def _root(docs: Mapping[str, _Doc]) -> _Doc:
    """The document no other one refers to: the image's (create-spdx's root)."""
    referenced = {ns for doc in docs.values() for ns in doc.refs.values()}
    roots = [doc for ns, doc in docs.items() if ns not in referenced]
    if len(roots) != 1:
        raise SbomError(f"expected one image document that no other refers to, found {len(roots)}")
    return roots[0]


def _image_id(doc: _Doc) -> str:
    if not doc.described and len(doc.packages) == 1:
        return next(iter(doc.packages))  # create-spdx's image document: the image is its one package
    if len(set(doc.described)) != 1:
        raise SbomError(f"{doc.name}: does not say which package it describes")
    return doc.described[0]


def _licenses_of(package: Mapping[str, Any]) -> set[str]:
    text = " ".join(str(package.get(k, "")) for k in ("licenseConcluded", "licenseDeclared"))
    text += " " + " ".join(_strings(package.get("licenseInfoFromFiles")))
    return set(_LICENSE_REF.findall(text))


@dataclass(frozen=True)
class Merged:
    """The release's document, the image package it describes and the packages that contains."""

    document: dict[str, Any]
    image: Mapping[str, Any]
    contained: tuple[Mapping[str, Any], ...]

    @property
    def name(self) -> str:
        return str(self.document.get("name", ""))

    @property
    def creation(self) -> Mapping[str, Any]:
        creation = self.document.get("creationInfo")
        return creation if isinstance(creation, dict) else {}


def merge(parsed: Iterable[Mapping[str, Any]], tool: str) -> Merged:
    """The release's SPDX document from every document of an image's SBOM."""
    docs: dict[str, _Doc] = {}
    first: Mapping[str, Any] | None = None
    for doc in parsed:
        reduced = reduce(doc)
        docs.setdefault(reduced.namespace, reduced)
        first = doc if first is None else first
    if not docs:
        raise SbomError("the archive holds no SPDX document")
    image_doc = _root(docs)
    image_id = _image_id(image_doc)
    if image_id not in image_doc.packages:
        raise SbomError(f"{image_doc.name}: describes {image_id}, which it does not hold")
    packages = [dict(image_doc.packages[image_id])]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": image_id}]
    licenses: dict[str, Mapping[str, Any]] = {}
    used = {image_id}
    for element, relation, related in image_doc.relationships:
        if element != image_id or relation != "CONTAINS":
            continue
        holder, target = image_doc, related
        if ":" in related:
            ref, target = related.split(":", 1)
            found = docs.get(image_doc.refs.get(ref, ""))
            if found is None:
                raise SbomError(f"{image_doc.name}: contains {related}, whose document the SBOM lacks")
            holder = found
        package = holder.packages.get(target)
        if package is None:
            raise SbomError(f"{image_doc.name}: contains {related}, which its document does not hold")
        name, version = package.get("name"), package.get("versionInfo", "")
        if not isinstance(name, str) or not name or not isinstance(version, str):
            raise SbomError(f"{holder.name}: package {target} has no name or a malformed versionInfo")
        spdxid, n = target, 1
        while spdxid in used:  # two documents may name their packages alike
            n += 1
            spdxid = f"{target}-{n}"
        used.add(spdxid)
        copy = dict(package, SPDXID=spdxid, filesAnalyzed=False)
        packages.append(copy)
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": spdxid})
        for license_id in _licenses_of(copy):
            if license_id in holder.licenses:
                licenses.setdefault(license_id, holder.licenses[license_id])
    for license_id in _licenses_of(packages[0]):
        if license_id in image_doc.licenses:
            licenses.setdefault(license_id, image_doc.licenses[license_id])
    image, contained = packages[0], tuple(packages[1:])
    if len(docs) == 1 and image_doc.described and not image_doc.refs and first is not None:
        # Already one self-contained document (a release's, read back): as it is.
        return Merged(dict(first), image, contained)
    creation = dict(image_doc.creation)
    creation["creators"] = [*_strings(creation.get("creators")), f"Tool: {tool}"]
    creation["comment"] = ("The image's create-spdx documents in one: each package as its own document "
                           "describes it, the files they list left out.")
    document = {
        "spdxVersion": image_doc.spdx_version, "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": image_doc.name, "documentNamespace": f"{image_doc.namespace}/release",
        "creationInfo": creation, "packages": packages, "relationships": relationships,
        "hasExtractedLicensingInfos": [licenses[k] for k in sorted(licenses)],
    }
    return Merged(document, image, contained)
