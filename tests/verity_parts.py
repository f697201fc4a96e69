"""dm-verity slots as the image build makes them, for the tests of verified boot's release side:
the verity image (``mke2fs -d``, then ``veritysetup format`` with the hash tree appended and
its parameters written the way meta-security's dm-verity-img writes them), an initramfs that
carries them (GNU ``cpio -H newc``, gzip) and a FIT of it (``mkimage -f``)."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

from helpers import require, write_image

ENV = "usr/share/misc/dm-verity.env"


@dataclass(frozen=True)
class Verity:
    image: Path       # ext4, then at data_size the superblock and the hash tree
    env_text: str     # dm-verity-img's parameters file
    root_hash: str
    data_size: int


def _run(*argv: str | Path, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, input=stdin, capture_output=True)
    assert result.returncode == 0, (argv, result.stderr)
    return result.stdout


def make_verity(work: Path, name: str, seed: int, data: Path | None = None) -> Verity:
    """An ext4 of a small tree (or ``data`` as it is), with its hash tree as dm-verity-img appends it."""
    require("mke2fs", "veritysetup")
    image = work / name
    if data is None:
        tree = work / f"{name}.tree"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc/os-release").write_text(f"ID=pyvorin\nVERSION_ID={seed}\n")
        write_image(tree / "blob", 300_000, seed=seed)
        _run("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", tree, image, "8M")
    else:
        shutil.copyfile(data, image)
    size = image.stat().st_size
    output = _run("veritysetup", "--data-block-size=4096", "--hash-block-size=4096", f"--hash-offset={size}",
                  "format", image, image).decode()
    # dm-verity-img's process_verity(): the first line dropped, "Key name:  value" -> KEY_NAME=value with
    # the whitespace removed, then DATA_SIZE and SEPARATE_HASH.
    lines = []
    for line in output.splitlines()[1:]:
        key, _, value = line.partition(":")
        lines.append(f"{key.strip().upper().replace(' ', '_')}={''.join(value.split())}")
    text = "\n".join(lines) + f"\nDATA_SIZE={size}\nSEPARATE_HASH=0\n"
    root = re.search(r"^ROOT_HASH=([0-9a-f]{64})$", text, re.M)
    assert root, output
    return Verity(image, text, root.group(1), size)


def make_initramfs(work: Path, name: str, env_text: str | None, dot_slash: bool = True) -> Path:
    """A gzip-compressed newc initramfs with the parameters at usr/share/misc/dm-verity.env (GNU cpio's
    names: "./usr/..." as ``find .`` lists them, or "usr/...")."""
    require("cpio", "gzip")
    root = work / f"{name}.root"
    (root / "usr/share/misc").mkdir(parents=True)
    (root / "init").write_text("#!/bin/sh\nexec /sbin/init\n")
    if env_text is not None:
        (root / ENV).write_text(env_text)
    names = _run("find", ".", cwd=root) if dot_slash else _run("find", ".", "-mindepth", "1", "-printf", "%P\n",
                                                                cwd=root)
    archive = _run("cpio", "-o", "-H", "newc", "--quiet", cwd=root, stdin=names)
    out = work / f"{name}.cpio.gz"
    out.write_bytes(_run("gzip", "-9n", stdin=archive))
    return out


def fit_source(kernel: Path, ramdisk: Path | None = None, algo: str | None = None) -> str:
    """The ``.its`` of a FIT of ``kernel`` (and ``ramdisk``): one configuration, signed with
    ``algo`` (e.g. "sha256,rsa2048") by the key named pyvorin-fit when given."""
    ramdisk_node = textwrap.indent(textwrap.dedent(f"""\
        ramdisk-1 {{
            data = /incbin/("{ramdisk}");
            type = "ramdisk"; arch = "arm64"; os = "linux"; compression = "none";
            hash-1 {{ algo = "sha256"; }};
        }};
        """), " " * 8) if ramdisk else ""
    images = '"kernel", "ramdisk"' if ramdisk else '"kernel"'
    signature = (f'signature-1 {{ algo = "{algo}"; key-name-hint = "pyvorin-fit"; sign-images = {images}; }};'
                 if algo else "")
    return textwrap.dedent(f"""\
        /dts-v1/;
        / {{
            description = "pyvorin test slot";
            #address-cells = <1>;
            images {{
                kernel-1 {{
                    data = /incbin/("{kernel}");
                    type = "kernel"; arch = "arm64"; os = "linux"; compression = "none";
                    load = <0x40400000>; entry = <0x40400000>;
                    hash-1 {{ algo = "sha256"; }};
                }};
        """) + ramdisk_node + textwrap.dedent(f"""\
            }};
            configurations {{
                default = "conf-1";
                conf-1 {{ kernel = "kernel-1"; {'ramdisk = "ramdisk-1"; ' if ramdisk else ''}{signature} }};
            }};
        }};
        """)


def make_fit(work: Path, name: str, ramdisk: Path, external: str = "") -> Path:
    """``mkimage -f`` of a kernel (any bytes) and ``ramdisk``; ``external``: "offset" (-E) or "position" (-E -p)."""
    require("mkimage")
    kernel = write_image(work / f"{name}.kernel", 20_000, seed=7)
    its = work / f"{name}.its"
    its.write_text(fit_source(kernel, ramdisk))
    options = {"": [], "offset": ["-E"], "position": ["-E", "-p", "0x1000"]}[external]
    out = work / name
    _run("mkimage", *options, "-f", its, out)
    return out


def gzipped(path: Path, name: str | None = None) -> Path:
    out = path.with_name(name or path.name + ".gz")
    with open(path, "rb") as source, gzip.GzipFile(out, "wb", mtime=0) as sink:
        shutil.copyfileobj(source, sink, 1 << 20)
    return out


def zstded(path: Path) -> Path:
    require("zstd")
    out = path.with_name(path.name + ".zst")
    _run("zstd", "-qf", "-o", out, path)
    return out
