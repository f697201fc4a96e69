"""pyvorin verify holds a bundle's dm-verity image to the root hash in the bundle's FIT (verified boot).

Everything is made by the tools the image build uses: ``mke2fs -d`` for the
root file system, ``veritysetup format`` with the hash tree appended (its
parameters written the way meta-security's dm-verity-img writes them), GNU
``cpio -H newc`` and gzip for the initramfs that carries them, ``mkimage -f``
for the FIT (embedded data, and ``-E`` external data by offset and by
position). The bundle installs both into each slot, the FIT with an
``offset``, as docs/verified-boot.md lays a slot out. Hostile FITs are built
byte by byte (a minimal FDT writer below)."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvorin.fit import read_fit
from pyvorin.initramfs import find_file
from pyvorin.region import Region
from verity_parts import ENV, Verity, gzipped, make_fit, make_initramfs, make_verity, zstded

from helpers import pyvorin_peak_rss, require_module, write_image

FIT_OFFSET = 16 << 20  # the FIT's window in the test slot: after the 8 MiB image and its tree


def _entry(path: Path, kind: str = "raw") -> str:
    if kind == "pyvdelta":
        return f"{{file: {path.name}, type: pyvdelta}}"  # applied from a file, never streamed
    compressed = {".gz": ", compressed: zlib", ".zst": ", compressed: zstd"}.get(path.suffix, "")
    return f"{{file: {path.name}, type: {kind}{compressed}, installed-directly: true}}"


def write_spec(work: Path, image: Path, fit: Path, image_kind: str = "raw") -> Path:
    """Both copies install the image from the slot's first byte and the FIT at FIT_OFFSET, as
    docs/verified-boot.md lays a slot out (copy1 writes slot B, /dev/vda3)."""
    def target(slot: str, other: str) -> str:
        return f"{{device: {slot}, source: {other}}}" if image_kind == "pyvdelta" else slot

    spec = work / "release.yaml"
    spec.write_text(textwrap.dedent(f"""\
        version: "2026.12.0"
        artifacts:
          {image.name}: {_entry(image, image_kind)}
          {fit.name}: {_entry(fit)}
        machines:
          qemu-arm64:
            hardware-compatibility: ["1.0"]
            bootenv: {{upgrade_available: "1", bootcount: "0"}}
            copy1:
              install:
                {image.name}: {target("/dev/vda3", "/dev/vda2")}
                {fit.name}: {{device: /dev/vda3, offset: {FIT_OFFSET}}}
              bootenv: {{rootpart: "3"}}
            copy2:
              install:
                {image.name}: {target("/dev/vda2", "/dev/vda3")}
                {fit.name}: {{device: /dev/vda2, offset: 16M}}
              bootenv: {{rootpart: "2"}}
        """))
    return spec


def bundle(cli, keys, work: Path, image: Path, fit: Path, image_kind: str = "raw") -> Path:
    out = work / "release.swu"
    cli("bundle", write_spec(work, image, fit, image_kind), "-o", out, *keys.signing_args(), check=True)
    return out


def verity_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("verity:")]


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def slot(tmp_path_factory: pytest.TempPathFactory) -> Verity:
    return make_verity(tmp_path_factory.mktemp("slot"), "rootfs.verity", seed=1)


@pytest.fixture(scope="module")
def initramfs(slot: Verity, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_initramfs(tmp_path_factory.mktemp("initramfs"), "initramfs", slot.env_text)


# -- the FIT reader against mkimage ------------------------------------------------------------


@pytest.mark.parametrize("external", ["", "offset", "position"])
def test_the_reader_finds_what_mkimage_put_in(tmp_path: Path, initramfs: Path, slot: Verity, external: str) -> None:
    """Embedded data, -E (data-offset after the tree) and -E -p (data-position from the FIT's start)."""
    fit_path = make_fit(tmp_path, "slot.fit", initramfs, external)
    with open(fit_path, "rb") as handle:
        fit = read_fit(Region.whole(handle, fit_path))
        assert {(image.name, image.type, image.external) for image in fit.images} == {
            ("kernel-1", "kernel", bool(external)), ("ramdisk-1", "ramdisk", bool(external))}
        (ramdisk,) = fit.of_type("ramdisk")
        assert b"".join(ramdisk.data.chunks()) == initramfs.read_bytes()
        (kernel,) = fit.of_type("kernel")
        assert b"".join(kernel.data.chunks()) == (tmp_path / "slot.fit.kernel").read_bytes()
        assert find_file(ramdisk.data.chunks(), ENV, "ramdisk") == slot.env_text.encode()
        assert find_file(ramdisk.data.chunks(), "usr/share/misc/other", "ramdisk") is None


def test_the_initramfs_reader_takes_names_without_dot_slash(tmp_path: Path, slot: Verity) -> None:
    plain = make_initramfs(tmp_path, "plain", slot.env_text, dot_slash=False)
    assert find_file([plain.read_bytes()], "./" + ENV, "ramdisk") == slot.env_text.encode()
    # Uncompressed, and two archives one after the other with zero padding: the later entry wins.
    first = gzip.decompress(plain.read_bytes())
    second = gzip.decompress(make_initramfs(tmp_path, "second", "ROOT_HASH=ab\nDATA_SIZE=1\n").read_bytes())
    assert find_file([first, bytes(512), second], ENV, "ramdisk") == b"ROOT_HASH=ab\nDATA_SIZE=1\n"


# -- pyvorin verify ----------------------------------------------------------------------------


@pytest.mark.parametrize(("image_form", "fit_form", "external"), [
    ("gzip", "gzip", ""),            # the spec of docs/verified-boot.md
    ("none", "none", "offset"),      # read in place in the bundle; mkimage -E
    ("zstd", "zstd", "position"),    # mkimage -E -p
])
def test_verify_holds_the_image_to_the_root_hash_in_the_fit(cli, keys, tmp_path: Path, slot: Verity,
                                                            initramfs: Path, image_form: str, fit_form: str,
                                                            external: str) -> None:
    image = shutil.copyfile(slot.image, tmp_path / "rootfs.verity")
    fit = make_fit(tmp_path, "slot.fit", initramfs, external)
    pack = {"gzip": gzipped, "zstd": zstded, "none": lambda path: path}
    image, fit = pack[image_form](image), pack[fit_form](fit)
    swu = bundle(cli, keys, tmp_path, image, fit)
    result = cli("verify", swu, "--cert", keys.ca)
    assert result.returncode == 0, result.stderr
    # copy1 and copy2 both name the pair: it is checked once.
    assert verity_lines(result.stdout) == [
        f"verity: {image.name} matches the root hash in {fit.name} ({slot.root_hash})"]
    # The reference agrees.
    assert subprocess.run(["veritysetup", "verify", f"--hash-offset={slot.data_size}", slot.image, slot.image,
                           slot.root_hash], capture_output=True).returncode == 0


@pytest.mark.parametrize(("where", "message"), [
    ("data", "hash block 0 of tree level 0 does not match the data below it"),
    ("tree", "hash block 0 of tree level 1 does not match the data below it"),
])
def test_one_byte_changed_in_the_image_fails(cli, keys, tmp_path: Path, slot: Verity, initramfs: Path,
                                             where: str, message: str) -> None:
    data = bytearray(slot.image.read_bytes())
    # A data block's byte, or the top tree level's first block (right after the superblock's hash block).
    position = 4096 * 100 + 7 if where == "data" else slot.data_size + 4096 + 5
    data[position] ^= 0x01
    (tmp_path / "rootfs.verity").write_bytes(bytes(data))
    image = gzipped(tmp_path / "rootfs.verity")
    fit = gzipped(make_fit(tmp_path, "slot.fit", initramfs))
    result = cli("verify", bundle(cli, keys, tmp_path, image, fit), "--cert", keys.ca)
    line = one_line(result, 1)
    assert line.startswith("pyvorin: verification failed: verity: rootfs.verity.gz does not match the root hash "
                           "in slot.fit.gz (ramdisk 'ramdisk-1', DATA_SIZE "), line
    assert message in line


def test_a_fit_with_another_root_hash_fails(cli, keys, tmp_path: Path, slot: Verity) -> None:
    other = make_verity(tmp_path, "other.verity", seed=2)
    assert other.root_hash != slot.root_hash
    fit = gzipped(make_fit(tmp_path, "slot.fit", make_initramfs(tmp_path, "other", other.env_text)))
    image = gzipped(shutil.copyfile(slot.image, tmp_path / "rootfs.verity"))
    line = one_line(cli("verify", bundle(cli, keys, tmp_path, image, fit), "--cert", keys.ca), 1)
    # The image's data and stored tree agree with each other: only the root differs from the FIT's.
    assert line.endswith(f"rootfs.verity.gz does not match the root hash in slot.fit.gz (ramdisk 'ramdisk-1', "
                         f"DATA_SIZE {other.data_size}): root hash {slot.root_hash}, expected {other.root_hash}"), line


def test_nothing_to_check_says_nothing(cli, keys, tmp_path: Path, slot: Verity) -> None:
    """A FIT whose ramdisk has no parameters file, and an image at an offset that is no FIT."""
    image = gzipped(shutil.copyfile(slot.image, tmp_path / "rootfs.verity"))
    fit = gzipped(make_fit(tmp_path, "slot.fit", make_initramfs(tmp_path, "bare", None)))
    result = cli("verify", bundle(cli, keys, tmp_path, image, fit), "--cert", keys.ca)
    assert result.returncode == 0 and verity_lines(result.stdout) == [], result
    not_fit = gzipped(write_image(tmp_path / "slot.fit", 1 << 20, seed=3))
    result = cli("verify", bundle(cli, keys, tmp_path, image, not_fit), "--cert", keys.ca)
    assert result.returncode == 0 and verity_lines(result.stdout) == [], result


def test_a_delta_at_offset_0_is_reported_not_checked(cli, keys, tmp_path: Path, slot: Verity,
                                                     initramfs: Path) -> None:
    require_module("bsdiff4")
    old = make_verity(tmp_path, "old.verity", seed=4)
    cli("delta", old.image, slot.image, "-o", tmp_path / "rootfs.pyvd", "--no-report", check=True)
    fit = gzipped(make_fit(tmp_path, "slot.fit", initramfs))
    result = cli("verify", bundle(cli, keys, tmp_path, tmp_path / "rootfs.pyvd", fit, "pyvdelta"),
                 "--cert", keys.ca)
    assert result.returncode == 0, result.stderr
    assert verity_lines(result.stdout) == [
        f"verity: rootfs.pyvd not checked against the root hash in slot.fit.gz ({slot.root_hash}): a pyvdelta "
        "rebuilds the image from the device's old one, which the bundle does not hold (pyvorin verity check "
        "can check the slot it rebuilt)"]


def test_an_encrypted_image_is_reported_not_checked(cli, keys, tmp_path: Path, slot: Verity,
                                                   initramfs: Path) -> None:
    image = gzipped(shutil.copyfile(slot.image, tmp_path / "rootfs.verity"))
    fit = gzipped(make_fit(tmp_path, "slot.fit", initramfs))
    spec = write_spec(tmp_path, image, fit)
    spec.write_text(spec.read_text().replace("compressed: zlib, installed", "compressed: zlib, encrypted: true, "
                                             "installed", 1))
    swu = tmp_path / "encrypted.swu"
    cli("bundle", spec, "-o", swu, *keys.signing_args(), "--aes-key", keys.aes, check=True)
    result = cli("verify", swu, "--cert", keys.ca)
    assert result.returncode == 0, result.stderr
    assert verity_lines(result.stdout) == [
        f"verity: rootfs.verity.gz not checked against the root hash in slot.fit.gz ({slot.root_hash}): it is "
        "encrypted and verify has no AES key to read it"]


def test_memory_stays_bounded(cli, keys, tmp_path: Path) -> None:
    """80 MiB of data, gzip-compressed: decompressed to a temporary file and checked, peak RSS under 64 MiB."""
    big = make_verity(tmp_path, "big.verity", seed=5, data=write_image(tmp_path / "data", 80 << 20, seed=5))
    fit = make_fit(tmp_path, "slot.fit", make_initramfs(tmp_path, "big", big.env_text))
    image = gzipped(big.image)
    spec = write_spec(tmp_path, image, fit)
    spec.write_text(spec.read_text().replace(str(FIT_OFFSET), str(96 << 20)).replace("16M", "96M"))
    cli("bundle", spec, "-o", tmp_path / "big.swu", *keys.signing_args(), check=True)
    result, peak_kib = pyvorin_peak_rss(cli.env, "verify", tmp_path / "big.swu", "--cert", keys.ca)
    assert result.returncode == 0, result.stderr
    assert verity_lines(result.stdout) == [f"verity: big.verity.gz matches the root hash in slot.fit ({big.root_hash})"]
    assert peak_kib < 64 * 1024, peak_kib


# -- hostile FITs ------------------------------------------------------------------------------


class Fdt:
    """Writes flattened device trees token by token, including ones no dtc would write."""

    def __init__(self) -> None:
        self.strings = b""

    def prop(self, name: str, value: bytes, name_offset: int | None = None) -> bytes:
        if name_offset is None:
            name_offset = len(self.strings)
            self.strings += name.encode() + b"\0"
        return struct.pack(">III", 3, len(value), name_offset) + value + bytes(-len(value) % 4)

    @staticmethod
    def node(name: str, *body: bytes) -> bytes:
        raw = name.encode() + b"\0"
        return struct.pack(">I", 1) + raw + bytes(-len(raw) % 4) + b"".join(body) + struct.pack(">I", 2)

    def blob(self, structure: bytes, extra: bytes = b"", totalsize_delta: int = 0, end: bool = True) -> bytes:
        structure += struct.pack(">I", 9) if end else b""
        off_struct = 40 + 16  # header, an empty memory reservation map
        off_strings = off_struct + len(structure)
        total = off_strings + len(self.strings)
        header = struct.pack(">10I", 0xD00DFEED, total + totalsize_delta, off_struct, off_strings, 40, 17, 16, 0,
                             len(self.strings), len(structure))
        return header + bytes(16) + structure + self.strings + extra


def _ramdisk_fit(fdt: Fdt, *props: bytes, extra: bytes = b"") -> bytes:
    return fdt.blob(fdt.node("", fdt.node("images", fdt.node("ramdisk-1", fdt.prop("type", b"ramdisk\0"),
                                                               *props))), extra)


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def hostile(case: str, real_fit: bytes, ramdisk: bytes) -> bytes:
    fdt = Fdt()
    if case == "truncated":
        return real_fit[:len(real_fit) // 2]
    if case == "totalsize lies":
        return fdt.blob(fdt.node("", fdt.node("images")), totalsize_delta=4096)
    if case == "data-size huge":
        return _ramdisk_fit(fdt, fdt.prop("data-offset", _u32(0)), fdt.prop("data-size", _u32(0xFFFFFFFF)),
                            extra=bytes(64))
    if case == "data-position out of range":
        return _ramdisk_fit(fdt, fdt.prop("data-position", _u32(0x7FFFFFF0)), fdt.prop("data-size", _u32(16)))
    if case == "deep nesting":
        inner = fdt.node("n")
        for _ in range(20):
            inner = fdt.node("n", inner)
        return fdt.blob(fdt.node("", inner))
    if case == "unterminated name":
        return fdt.blob(struct.pack(">I", 1) + b"images" * 50, end=False)
    if case == "unknown token":
        return fdt.blob(fdt.node("", struct.pack(">I", 7)))
    if case == "property name outside the strings":
        return _ramdisk_fit(fdt, fdt.prop("data", b"x", name_offset=9999))
    if case == "ramdisk not a cpio":
        return _ramdisk_fit(fdt, fdt.prop("data", b"\x5d\x00\x00\x80" + bytes(60)))
    if case == "ramdisk gzip truncated":
        return _ramdisk_fit(fdt, fdt.prop("data", ramdisk[:len(ramdisk) - 10]))
    raise AssertionError(case)


@pytest.mark.parametrize(("case", "message"), [
    ("truncated", "the header's totalsize"),
    ("totalsize lies", "does not fit the"),
    ("data-size huge", "4294967295 bytes of data at"),
    ("data-position out of range", "lie outside the FIT's"),
    ("deep nesting", "nested deeper than 8"),
    ("unterminated name", "not terminated within 256 bytes"),
    ("unknown token", "unknown token 0x7"),
    ("property name outside the strings", "property name offset 9999"),
    ("ramdisk not a cpio", "neither a gzip or zstd compressed nor a plain newc cpio archive"),
    ("ramdisk gzip truncated", "the gzip stream is truncated"),
])
def test_hostile_fits_are_one_error_line(cli, tmp_path: Path, slot: Verity, initramfs: Path, case: str,
                                         message: str) -> None:
    real = make_fit(tmp_path, "real.fit", initramfs).read_bytes()
    (tmp_path / "slot.fit").write_bytes(hostile(case, real, initramfs.read_bytes()))
    image = gzipped(shutil.copyfile(slot.image, tmp_path / "rootfs.verity"))
    swu = tmp_path / "hostile.swu"
    cli("bundle", write_spec(tmp_path, image, tmp_path / "slot.fit"), "-o", swu, "--unsigned", check=True)
    line = one_line(cli("verify", swu, "--allow-unsigned"), 2)
    assert line.startswith("pyvorin: error: slot.fit: ") and message in line, line


def test_a_fit_over_the_window_is_refused(cli, tmp_path: Path, slot: Verity) -> None:
    """64 MiB and one byte of it, gzip-compressed: refused once the window is full, not read on."""
    fdt = Fdt()
    head = fdt.blob(fdt.node("", fdt.node("images")))
    with gzip.GzipFile(tmp_path / "slot.fit.gz", "wb", mtime=0) as sink:
        sink.write(head)
        for _ in range(64):
            sink.write(bytes(1 << 20))
    image = gzipped(shutil.copyfile(slot.image, tmp_path / "rootfs.verity"))
    swu = tmp_path / "big-fit.swu"
    cli("bundle", write_spec(tmp_path, image, tmp_path / "slot.fit.gz"), "-o", swu, "--unsigned", check=True)
    line = one_line(cli("verify", swu, "--allow-unsigned"), 2)
    assert line == ("pyvorin: error: slot.fit.gz: not a readable FIT: over 64 MiB decompressed, the FIT window of "
                    "a slot (U-Boot reads no more)")


@pytest.fixture(scope="module")
def real_fits(initramfs: Path, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    work = tmp_path_factory.mktemp("fits")
    return [make_fit(work, f"fit-{external or 'embedded'}", initramfs, external).read_bytes()
            for external in ("", "offset", "position")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 1 << 16)))
def test_mutated_fits_raise_only_the_packages_errors(tmp_path: Path, real_fits: list[bytes], which: int,
                                                     edits: list[tuple[int, int]], cut: int | None) -> None:
    """Bytes of mkimage's FITs changed or cut: the reader and the initramfs walk either read them or raise
    the package's error (one line from main()), never another exception."""
    from pyvorin.errors import PyvorinError

    data = bytearray(real_fits[which])
    for at, value in edits:
        data[at % len(data)] = value
    blob = bytes(data[:cut] if cut is not None else data)
    path = tmp_path / "mutated.fit"
    path.write_bytes(blob)
    with open(path, "rb") as handle:
        try:
            for ramdisk in read_fit(Region.whole(handle, path)).of_type("ramdisk"):
                find_file(ramdisk.data.chunks(), ENV, "ramdisk")
        except PyvorinError:
            pass
