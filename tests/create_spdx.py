"""SPDX documents shaped as oe-core scarthgap's create-spdx writes them
(meta/classes/create-spdx-2.2.bbclass, meta/lib/oe/spdx.py): a document per
recipe, per package and per package's runtime, and the image's, which
CONTAINS each package by reference into that package's document, all in
``<image>.spdx.tar.zst`` with an ``index.json``. tests/test_sbom.py checks
these with spdx-tools and the NTIA checker, so the shape is SPDX, not a guess.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

NAMESPACE = "http://spdx.org/spdxdocs"
CREATED = "2026-12-01T10:00:00Z"
SUPPLIER = "Organization: OpenEmbedded ()"


def _creation() -> dict[str, Any]:
    return {"comment": "This document was created by analyzing the source of the Yocto recipe during the build.",
            "created": CREATED, "licenseListVersion": "3.20",
            "creators": ["Tool: OpenEmbedded Core create-spdx.bbclass", "Organization: OpenEmbedded ()",
                         "Person: N/A ()"]}


def _document(name: str, packages: list[dict[str, Any]], relationships: list[dict[str, str]],
              refs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"SPDXID": "SPDXRef-DOCUMENT", "creationInfo": _creation(), "dataLicense": "CC0-1.0",
            "documentNamespace": f"{NAMESPACE}/{name}-{hashlib.sha1(name.encode()).hexdigest()[:8]}",
            "externalDocumentRefs": refs, "name": name, "packages": packages, "relationships": relationships,
            "spdxVersion": "SPDX-2.2"}


def _package(spdxid: str, name: str, version: str) -> dict[str, Any]:
    return {"SPDXID": spdxid, "copyrightText": "NOASSERTION", "downloadLocation": "NOASSERTION",
            "licenseConcluded": "NOASSERTION", "licenseDeclared": "MIT", "name": name, "supplier": SUPPLIER,
            "versionInfo": version}


def _ref(doc: dict[str, Any], data: bytes) -> dict[str, Any]:
    return {"checksum": {"algorithm": "SHA1", "checksumValue": hashlib.sha1(data).hexdigest()},
            "externalDocumentId": f"DocumentRef-{doc['name']}", "spdxDocument": doc["documentNamespace"]}


def _bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


def documents(image: str, version: str, packages: Mapping[str, str]) -> dict[str, bytes]:
    """File name -> bytes of every document of an image holding ``packages`` (name -> version)."""
    out: dict[str, bytes] = {}
    image_refs, image_relations = [], []
    image_id = f"SPDXRef-Image-{image}"
    for name, pkg_version in sorted(packages.items()):
        recipe = _document(f"recipe-{name}", [_package(f"SPDXRef-Recipe-{name}", name, pkg_version)],
                           [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                             "relatedSpdxElement": f"SPDXRef-Recipe-{name}"}], [])
        recipe_bytes = _bytes(recipe)
        recipe_ref = _ref(recipe, recipe_bytes)
        package_id = f"SPDXRef-Package-{name}"
        package = _document(name, [_package(package_id, name, pkg_version)],
                            [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                              "relatedSpdxElement": package_id},
                             {"spdxElementId": package_id, "relationshipType": "GENERATED_FROM",
                              "relatedSpdxElement": f"{recipe_ref['externalDocumentId']}:SPDXRef-Recipe-{name}"}],
                            [recipe_ref])
        package_bytes = _bytes(package)
        package_ref = _ref(package, package_bytes)
        # As create_runtime_spdx: no package of its own, it AMENDS the package's document.
        runtime = _document(f"runtime-{name}", [], [
            {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "AMENDS",
             "relatedSpdxElement": f"{package_ref['externalDocumentId']}:SPDXRef-DOCUMENT"}],
            [package_ref])
        runtime_bytes = _bytes(runtime)
        runtime_ref = _ref(runtime, runtime_bytes)
        image_refs += [package_ref, runtime_ref]
        image_relations += [
            {"spdxElementId": image_id, "relationshipType": "CONTAINS",
             "relatedSpdxElement": f"{package_ref['externalDocumentId']}:{package_id}"},
            {"spdxElementId": image_id, "relationshipType": "OTHER", "comment": f"Runtime dependencies for {name}",
             "relatedSpdxElement": f"{runtime_ref['externalDocumentId']}:SPDXRef-DOCUMENT"}]
        out.update({f"recipe-{name}.spdx.json": recipe_bytes, f"{name}.spdx.json": package_bytes,
                    f"runtime-{name}.spdx.json": runtime_bytes})
    image_doc = _document(image, [_package(image_id, "pyvorin-image", version)], image_relations, image_refs)
    out[f"{image}.spdx.json"] = _bytes(image_doc)
    return out


def tar(members: Mapping[str, bytes]) -> bytes:
    """A tar of ``members`` (name -> bytes), in that order, as create-spdx's tarfile writes them."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w|") as out:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.uname = info.gname = "root"
            out.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def archive(path: Path, docs: Mapping[str, bytes], compress: bool = True) -> Path:
    """create-spdx's archive of ``docs`` (the image document first, as it adds them) with index.json."""
    index = {"documents": sorted(({"filename": n, "documentNamespace": json.loads(d)["documentNamespace"],
                                   "sha1": hashlib.sha1(d).hexdigest()} for n, d in docs.items()),
                                 key=lambda e: e["filename"])}
    members = dict(sorted(docs.items(), key=lambda item: not item[0].startswith("pyvorin-image")))
    members["index.json"] = json.dumps(index, sort_keys=True).encode()
    data = tar(members)
    path.write_bytes(zstd(data) if compress else data)
    return path
