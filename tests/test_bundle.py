"""pyvorin bundle / sign / verify / inspect, end to end through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyvorin import aes, libconfig

from helpers import (
    extract,
    one_error_line,
    pyvorin_peak_rss,
    read_members,
    require,
    require_module,
    tampered,
    unavailable,
    write_image,
)


def _build(cli, spec: Path, out: Path, keys, *extra: str | Path) -> Path:
    cli("bundle", spec, "-o", out, *keys.signing_args(), *extra, check=True)
    return out


def test_bundle_layout_and_verify(cli, keys, make_spec, tmp_path: Path) -> None:
    swu = _build(cli, make_spec(), tmp_path / "r.swu", keys)
    names = [name for name, _ in read_members(swu)]
    assert names == ["sw-description", "sw-description.sig", "rootfs.img"]
    result = cli("verify", swu, "--cert", keys.ca, check=True)
    assert "OK, version 2026.11.0" in result.stdout and "rootfs.img" in result.stdout
    # GNU cpio reads it and the image inside is the input, byte for byte.
    out = extract(swu, tmp_path / "x")
    assert (out / "rootfs.img").read_bytes() == (tmp_path / "rootfs.img").read_bytes()


def test_same_inputs_same_bytes(cli, keys, make_spec, tmp_path: Path) -> None:
    spec = make_spec()
    first = _build(cli, spec, tmp_path / "a.swu", keys).read_bytes()
    second = _build(cli, spec, tmp_path / "b.swu", keys).read_bytes()
    assert first == second
    stamped = cli("bundle", spec, "-o", tmp_path / "c.swu", *keys.signing_args(),
                  env={"SOURCE_DATE_EPOCH": "1700000000"}, check=True)
    assert stamped.returncode == 0 and (tmp_path / "c.swu").read_bytes() != first


def test_two_step_signing_equals_one_step(cli, keys, make_spec, tmp_path: Path) -> None:
    spec = make_spec()
    direct = _build(cli, spec, tmp_path / "direct.swu", keys)
    cli("bundle", spec, "-o", tmp_path / "u.swu", "--unsigned", check=True)
    assert [n for n, _ in read_members(tmp_path / "u.swu")] == ["sw-description", "rootfs.img"]
    unsigned_verify = cli("verify", tmp_path / "u.swu", "--cert", keys.ca)
    assert unsigned_verify.returncode == 1 and "not signed" in unsigned_verify.stderr
    assert cli("verify", tmp_path / "u.swu", "--allow-unsigned").returncode == 0
    cli("sign", tmp_path / "u.swu", "-o", tmp_path / "s.swu", *keys.signing_args(), check=True)
    assert (tmp_path / "s.swu").read_bytes() == direct.read_bytes()
    again = cli("sign", tmp_path / "s.swu", *keys.signing_args())
    assert again.returncode == 2 and "already signed" in again.stderr
    cli("sign", tmp_path / "u.swu", *keys.signing_args(), check=True)  # in place
    assert (tmp_path / "u.swu").read_bytes() == direct.read_bytes()


@pytest.mark.parametrize("scheme", ["rsa", "rsa-pss"])
def test_raw_rsa_schemes_round_trip(cli, keys, make_spec, tmp_path: Path, scheme: str) -> None:
    swu = _build(cli, make_spec(), tmp_path / "r.swu", keys, "--scheme", scheme)
    assert cli("verify", swu, "--scheme", scheme, "--key", keys.cert).returncode == 0
    other = "rsa" if scheme == "rsa-pss" else "rsa-pss"
    assert cli("verify", swu, "--scheme", other, "--key", keys.cert).returncode == 1


@pytest.mark.parametrize("member,at,message", [
    ("sw-description", 40, "message digest"),
    ("sw-description.sig", -3, "signature is invalid"),
    ("rootfs.img", 0, "does not match its sha256"),
    ("rootfs.img", -1, "does not match its sha256"),
])
def test_tampering_is_detected(cli, keys, make_spec, tmp_path: Path, member: str, at: int, message: str) -> None:
    swu = _build(cli, make_spec(), tmp_path / "r.swu", keys)
    bad = tampered(swu, tmp_path / "bad.swu", member, flip_at=at)
    result = cli("verify", bad, "--cert", keys.ca)
    assert result.returncode == 1
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_corruption_without_checksum_fix_is_caught_by_the_cpio_checksum(cli, keys, make_spec, tmp_path: Path) -> None:
    swu = _build(cli, make_spec(), tmp_path / "r.swu", keys)
    bad = tampered(swu, tmp_path / "bad.swu", "rootfs.img", flip_at=100, fix_checksum=False)
    result = cli("verify", bad, "--cert", keys.ca)
    assert result.returncode == 1 and "cpio checksum" in result.stderr


def test_foreign_key_and_missing_signature(cli, keys, foreign_keys, make_spec, tmp_path: Path) -> None:
    spec = make_spec()
    foreign = _build(cli, spec, tmp_path / "f.swu", foreign_keys)
    result = cli("verify", foreign, "--cert", keys.ca)
    assert result.returncode == 1 and "does not chain" in result.stderr
    swu = _build(cli, spec, tmp_path / "r.swu", keys)
    dropped = tampered(swu, tmp_path / "nosig.swu", drop="sw-description.sig")
    result = cli("verify", dropped, "--cert", keys.ca)
    assert result.returncode == 1 and "not signed" in result.stderr


def test_inspect(cli, keys, make_spec, tmp_path: Path) -> None:
    swu = _build(cli, make_spec(), tmp_path / "r.swu", keys)
    data = json.loads(cli("inspect", swu, "--json", check=True).stdout)
    assert [m["name"] for m in data["members"]] == ["sw-description", "sw-description.sig", "rootfs.img"]
    board = data["sw-description"]["software"]["raspberrypi4-64"]
    assert board["stable"]["copy1"]["images"][0]["device"] == "/dev/mmcblk0p3"
    text = cli("inspect", swu, check=True).stdout
    assert 'version = "2026.11.0";' in text


def test_encrypted_image_has_its_own_iv_and_decrypts(cli, keys, make_spec, tmp_path: Path) -> None:
    spec = make_spec(encrypted=True)
    missing = cli("bundle", spec, "-o", tmp_path / "r.swu", *keys.signing_args())
    assert missing.returncode == 2 and "--aes-key" in missing.stderr
    swu = _build(cli, spec, tmp_path / "r.swu", keys, "--aes-key", keys.aes)
    members = dict(read_members(swu))
    tree = libconfig.parse(members["sw-description"].decode())
    image = tree["software"]["raspberrypi4-64"]["stable"]["copy1"]["images"][0]
    key = aes.load(keys.aes)
    assert image["encrypted"] is True and len(image["ivt"]) == 32 and bytes.fromhex(image["ivt"]) != key.iv
    plain = (tmp_path / "rootfs.img").read_bytes()
    assert members["rootfs.img"] != plain
    require("openssl")
    result = subprocess.run(["openssl", "enc", "-d", "-aes-256-cbc", "-K", key.key.hex(), "-iv", image["ivt"]],
                            input=members["rootfs.img"], capture_output=True, check=True)
    assert result.stdout == plain
    assert cli("verify", swu, "--cert", keys.ca).returncode == 0


def test_compression_flag_must_match_the_file(cli, keys, make_spec, tmp_path: Path) -> None:
    spec = make_spec()
    spec.write_text(spec.read_text().replace("    type: raw\n", "    type: raw\n    compressed: zstd\n"))
    result = cli("bundle", spec, "-o", tmp_path / "r.swu", *keys.signing_args())
    assert result.returncode == 2 and "is not zstd-compressed" in result.stderr
    assert not (tmp_path / "r.swu").exists()


@pytest.mark.parametrize("problem", ["missing-image", "4gib", "bad-outdir", "spec-missing"])
def test_errors_leave_no_partial_output(cli, keys, make_spec, tmp_path: Path, problem: str) -> None:
    spec = make_spec()
    out = tmp_path / "r.swu"
    if problem == "missing-image":
        (tmp_path / "rootfs.img").unlink()
        expected = "not found"
    elif problem == "4gib":
        with open(tmp_path / "rootfs.img", "r+b") as handle:
            handle.truncate(1 << 32)  # sparse: costs no disk
        expected = "4 GiB"
    elif problem == "bad-outdir":
        out = tmp_path / "no" / "such" / "dir" / "r.swu"
        expected = "cannot write to"
    else:
        spec = tmp_path / "nope.yaml"
        expected = "release spec not found"
    result = cli("bundle", spec, "-o", out, *keys.signing_args())
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_unwritable_output_dir_as_unprivileged_user(cli, tmp_path: Path) -> None:
    """Root ignores directory modes, so the check runs as 'nobody' in a world-readable dir."""
    require("setpriv")
    if os.geteuid() != 0:
        unavailable("needs root to switch to an unprivileged user")
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="pyvorin-nobody-", dir="/var/tmp"))
    try:
        work.chmod(0o755)
        write_image(work / "rootfs.img", 4096).chmod(0o644)
        spec = work / "release.yaml"
        spec.write_text(
            "version: 1.0.0\nartifacts:\n  rootfs.img: {file: rootfs.img, type: raw}\n"
            "machines:\n  rpi:\n    hardware-compatibility: ['1.0']\n"
            "    copy1: {install: {rootfs.img: /dev/b}}\n    copy2: {install: {rootfs.img: /dev/a}}\n"
        )
        spec.chmod(0o644)
        locked = work / "locked"
        locked.mkdir(mode=0o555)
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "pyvorin",
             "bundle", str(spec), "--unsigned", "-o", str(locked / "r.swu")],
            capture_output=True, text=True, env={**cli.env, "HOME": str(work)},
        )
        assert result.returncode == 2, result.stderr
        assert "cannot write to" in result.stderr and "Permission denied" in result.stderr
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(work)


def _peak_rss_of_bundle(cli, keys, spec: Path, out: Path) -> int:
    """Build in a child process and return its peak RSS in KiB."""
    result, peak_kib = pyvorin_peak_rss(cli.env, "bundle", spec, "-o", out, *keys.signing_args())
    assert result.returncode == 0, result.stderr
    return peak_kib


def test_bundling_runs_in_constant_memory(cli, keys, make_spec, tmp_path: Path) -> None:
    """A 512 MiB image must not make the bundler grow: peak RSS stays under 100 MiB."""
    spec = make_spec(image_size=4096)
    write_image(tmp_path / "rootfs.img", 512 << 20, seed=7)
    peak_kib = _peak_rss_of_bundle(cli, keys, spec, tmp_path / "r.swu")
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"
    assert cli("verify", tmp_path / "r.swu", "--cert", keys.ca).returncode == 0


@pytest.mark.slow
def test_multi_gib_image_in_constant_memory(cli, keys, make_spec, tmp_path: Path) -> None:
    """3 GiB, near the format's limit: same memory as 512 MiB, and GNU cpio agrees on the bytes."""
    spec = make_spec(image_size=4096)
    write_image(tmp_path / "rootfs.img", 3 << 30, seed=11)
    peak_kib = _peak_rss_of_bundle(cli, keys, spec, tmp_path / "r.swu")
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"
    assert cli("verify", tmp_path / "r.swu", "--cert", keys.ca).returncode == 0
    with open(tmp_path / "r.swu", "rb") as handle:
        listing = subprocess.run(["cpio", "-itv"], stdin=handle, capture_output=True, text=True, check=True).stdout
    assert f"{3 << 30}" in listing


def test_sign_accepts_a_newc_bundle_and_adds_checksums(cli, keys, tmp_path: Path) -> None:
    """A build host may produce the unsigned bundle with `cpio -H newc` (no checksums)."""
    require("cpio")
    src = tmp_path / "src"
    src.mkdir()
    (src / "sw-description").write_text('software = { version = "1.0"; rpi = { hardware-compatibility = ["1.0"]; '
                                         'stable = { copy1 = { images = ( { filename = "a.img"; type = "raw"; '
                                         f'device = "/dev/b"; sha256 = "{"0" * 64}"; }} ); }}; }}; }}; }};\n')
    write_image(src / "a.img", 10000)
    import hashlib

    sha = hashlib.sha256((src / "a.img").read_bytes()).hexdigest()
    text = (src / "sw-description").read_text().replace("0" * 64, sha)
    (src / "sw-description").write_text(text)
    with open(tmp_path / "newc.swu", "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=b"sw-description\na.img\n", cwd=src,
                       stdout=out, check=True)
    cli("sign", tmp_path / "newc.swu", "-o", tmp_path / "signed.swu", *keys.signing_args(), check=True)
    data = (tmp_path / "signed.swu").read_bytes()
    assert data.startswith(b"070702") and b"070701" not in data
    assert cli("verify", tmp_path / "signed.swu", "--cert", keys.ca).returncode == 0


# -- offset: images sharing a device must not overlap -----------------------------------------------

#: Where fit.itb starts in the shared-slot specs: rootfs.img must fit in the 256 KiB before it.
GAP = 256 << 10


def _shared_slot_spec(tmp_path: Path, rootfs_entry: str, rootfs_target: str = "/dev/mmcblk0p3") -> Path:
    """rootfs.img from the slot's first byte and fit.itb from 256K in it, in both copies."""
    write_image(tmp_path / "fit.itb", 8192, seed=9)
    spec = tmp_path / "shared.yaml"
    spec.write_text(f"""\
version: "2026.12.0"
artifacts:
  rootfs.img: {rootfs_entry}
  fit.itb: {{file: fit.itb, type: raw}}
machines:
  raspberrypi4-64:
    hardware-compatibility: ["1.0"]
    copy1:
      install:
        fit.itb: {{device: /dev/mmcblk0p3, offset: 256K}}
        rootfs.img: {rootfs_target}
    copy2:
      install:
        fit.itb: {{device: /dev/mmcblk0p2, offset: {GAP}}}
        rootfs.img: {rootfs_target.replace("p3", "p2")}
""")
    return spec


def _compress(kind: str, plain: Path, tmp_path: Path) -> str:
    """``plain`` as rootfs.img's file, compressed by ``kind``; its artifact entry."""
    if kind == "none":
        return f"{{file: {plain.name}, type: raw}}"
    if kind == "zlib":
        import gzip

        (tmp_path / "rootfs.gz").write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
        return "{file: rootfs.gz, type: raw, compressed: zlib}"
    require("zstd")
    subprocess.run(["zstd", "-qf", "-o", tmp_path / "rootfs.zst", plain], check=True)
    return "{file: rootfs.zst, type: raw, compressed: zstd, encrypted: true}"


@pytest.mark.parametrize("kind", ["none", "zlib", "zstd"])
def test_an_image_reaching_the_next_offset_is_refused(cli, keys, tmp_path: Path, kind: str) -> None:
    """What counts is what the device writes: for a compressed image, its decompressed size."""
    plain = write_image(tmp_path / "rootfs.img", GAP, seed=4)
    spec = _shared_slot_spec(tmp_path, _compress(kind, plain, tmp_path))
    fits = cli("bundle", spec, "-o", tmp_path / "fits.swu", *keys.signing_args(), "--aes-key", keys.aes)
    assert fits.returncode == 0, fits.stderr  # exactly the gap: the last byte before fit.itb
    write_image(plain, GAP + 1, seed=4)
    spec = _shared_slot_spec(tmp_path, _compress(kind, plain, tmp_path))
    out = tmp_path / "r.swu"
    line = one_error_line(cli("bundle", spec, "-o", out, *keys.signing_args(), "--aes-key", keys.aes))
    what = "written" if kind == "none" else "decompressed"
    assert line == (f"pyvorin: error: {spec}: raspberrypi4-64.copy1: 'rootfs.img' ({GAP + 1} bytes {what}) from "
                    f"offset 0 of /dev/mmcblk0p3 reaches past 'fit.itb' at offset {GAP}: it must fit in {GAP} bytes")
    assert not out.exists()
    assert one_error_line(cli("swdesc", spec)) == line  # swdesc measures the same way


def test_a_delta_reaching_the_next_offset_is_refused(cli, keys, tmp_path: Path) -> None:
    """A pyvdelta writes its new image's size from the slot's first byte."""
    require_module("bsdiff4")
    old = write_image(tmp_path / "old.img", GAP, seed=2)
    new = write_image(tmp_path / "new.img", GAP + 4096, seed=3)
    cli("delta", old, new, "-o", tmp_path / "rootfs.pyvd", "--no-report", check=True)
    spec = _shared_slot_spec(tmp_path, "{file: rootfs.pyvd, type: pyvdelta}",
                             "{device: /dev/mmcblk0p3, source: /dev/mmcblk0p2}")
    spec.write_text(spec.read_text().replace("{device: /dev/mmcblk0p2, source: /dev/mmcblk0p2}",
                                             "{device: /dev/mmcblk0p2, source: /dev/mmcblk0p3}"))
    line = one_error_line(cli("bundle", spec, "-o", tmp_path / "r.swu", "--unsigned"))
    assert f"'rootfs.img' ({GAP + 4096} bytes written) from offset 0 of /dev/mmcblk0p3 reaches past" in line


def test_a_compressed_image_is_measured_in_constant_memory(cli, keys, tmp_path: Path) -> None:
    """256 MiB of zeros gzip to 256 KiB: counting what they decompress to must not hold them."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with open(tmp_path / "rootfs.gz", "wb") as handle:
        for _ in range(256):
            handle.write(packer.compress(bytes(1 << 20)))
        handle.write(packer.flush())
    spec = _shared_slot_spec(tmp_path, "{file: rootfs.gz, type: raw, compressed: zlib}")
    spec.write_text(spec.read_text().replace("256K", "256M").replace(str(GAP), str(256 << 20)))
    result, peak_kib = pyvorin_peak_rss(cli.env, "bundle", spec, "-o", tmp_path / "r.swu", "--unsigned")
    assert result.returncode == 0, result.stderr  # exactly fits
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"
    spec.write_text(spec.read_text().replace("256M", "255M"))
    line = one_error_line(cli("bundle", spec, "-o", tmp_path / "r.swu", "--unsigned"))
    assert f"'rootfs.img' ({256 << 20} bytes decompressed) from offset 0" in line


def test_offsets_read_back(cli, keys, tmp_path: Path) -> None:
    """verify checks such a bundle like any other; inspect shows where each image starts."""
    write_image(tmp_path / "rootfs.img", 4096)
    swu = _build(cli, _shared_slot_spec(tmp_path, "{file: rootfs.img, type: raw}"), tmp_path / "r.swu", keys)
    assert "OK, version 2026.12.0" in cli("verify", swu, "--cert", keys.ca, check=True).stdout
    data = json.loads(cli("inspect", swu, "--json", check=True).stdout)
    images = data["sw-description"]["software"]["raspberrypi4-64"]["stable"]["copy1"]["images"]
    assert [(i["filename"], i["device"], i.get("offset")) for i in images] == [
        ("fit.itb", "/dev/mmcblk0p3", str(GAP)), ("rootfs.img", "/dev/mmcblk0p3", None)]
    assert f'offset = "{GAP}";' in cli("inspect", swu, check=True).stdout
