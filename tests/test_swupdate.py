"""The real consumer: the device's swupdate (2026.05.1, device_swupdate) installs our bundles, or refuses them.

Each run happens in a private mount namespace (see tools/devsim/pyvorin_devsim/swupdate_sandbox.py) with
file-backed A/B slots and a file-backed U-Boot environment read by
libubootenv.  Every refusal is asserted twice: by ``swupdate -c`` and by the
install itself, which must leave both slots and the environment untouched.
"""

from __future__ import annotations

import gzip
import textwrap
from pathlib import Path

import pytest

from pyvorin_devsim.swupdate_sandbox import FILL_BYTE, SUCCESS_MARKER, SwupdateSandbox

from helpers import tampered, write_image

pytestmark = [pytest.mark.swupdate, pytest.mark.usefixtures("device_swupdate")]


@pytest.fixture
def sandbox(tmp_path: Path) -> SwupdateSandbox:
    return SwupdateSandbox(tmp_path / "sbx", initial_env={"rootpart": "2", "bootcount": "0",
                                                          "upgrade_available": "0"})


@pytest.fixture
def release(cli, keys, make_spec, sandbox: SwupdateSandbox, tmp_path: Path) -> Path:
    spec = make_spec(slot_a=str(sandbox.slot_a), slot_b=str(sandbox.slot_b), image_size=300 * 1024)
    out = tmp_path / "release.swu"
    cli("bundle", spec, "-o", out, *keys.signing_args(), check=True)
    return out


def _image(tmp_path: Path) -> bytes:
    return (tmp_path / "rootfs.img").read_bytes()


def _assert_nothing_changed(sandbox: SwupdateSandbox, env_before: dict[str, str]) -> None:
    assert sandbox.untouched(sandbox.slot_a)
    assert sandbox.untouched(sandbox.slot_b)
    assert sandbox.printenv() == env_before


def test_copy1_installs_into_slot_b_and_switches_the_boot_env(sandbox, release, keys, tmp_path: Path) -> None:
    result = sandbox.install(release, keys.ca, "stable,copy1")
    assert result.returncode == 0 and SUCCESS_MARKER in result.output, result.output
    image = _image(tmp_path)
    written = sandbox.slot_bytes(sandbox.slot_b)
    # The raw handler never truncates: compare the payload's length.
    assert written[: len(image)] == image
    assert sandbox.untouched(sandbox.slot_a)
    env = sandbox.printenv()
    assert env["rootpart"] == "3"
    assert env["upgrade_available"] == "1"
    assert env["bootcount"] == "0"
    assert env.get("ustate") == "1"
    assert "recovery_status" not in env


def test_copy2_installs_into_slot_a(sandbox, release, keys, tmp_path: Path) -> None:
    sandbox.setenv("rootpart", "3")
    result = sandbox.install(release, keys.ca, "stable,copy2")
    assert result.succeeded, result.output
    image = _image(tmp_path)
    assert sandbox.slot_bytes(sandbox.slot_a)[: len(image)] == image
    assert sandbox.untouched(sandbox.slot_b)
    assert sandbox.printenv()["rootpart"] == "2"


def test_check_mode_accepts_and_writes_nothing(sandbox, release, keys) -> None:
    before = sandbox.printenv()
    result = sandbox.install(release, keys.ca, check_only=True)
    assert result.succeeded, result.output
    _assert_nothing_changed(sandbox, before)


@pytest.mark.parametrize("hwrevision", ["raspberrypi4-64:2.0", "jetson-orin-nano-devkit:1.0"])
def test_wrong_hardware_is_refused(sandbox, release, keys, hwrevision: str) -> None:
    before = sandbox.printenv()
    for check_only in (True, False):
        result = sandbox.install(release, keys.ca, hwrevision=hwrevision, check_only=check_only)
        assert result.returncode != 0 and SUCCESS_MARKER not in result.output
        assert "compatib" in result.output
    _assert_nothing_changed(sandbox, before)


@pytest.mark.parametrize("case", ["sw-description", "signature", "image-start", "image-end", "no-signature"])
def test_tampered_bundles_are_refused(sandbox, release, keys, tmp_path: Path, case: str) -> None:
    if case == "no-signature":
        bad = tampered(release, tmp_path / "bad.swu", drop="sw-description.sig")
    else:
        member, at = {
            "sw-description": ("sw-description", 60),
            "signature": ("sw-description.sig", -7),
            "image-start": ("rootfs.img", 0),
            "image-end": ("rootfs.img", -1),
        }[case]
        bad = tampered(release, tmp_path / "bad.swu", member, flip_at=at)
    before = sandbox.printenv()
    for check_only in (True, False):
        result = sandbox.install(bad, keys.ca, check_only=check_only)
        assert result.returncode != 0 and SUCCESS_MARKER not in result.output, result.output
    # The image is not installed-directly: SWUpdate checks it before writing.
    _assert_nothing_changed(sandbox, before)
    # pyvorin verify refuses it too.
    from pyvorin.errors import PyvorinError
    from pyvorin.verify import VerifyOptions, verify_bundle

    with pytest.raises(PyvorinError):
        verify_bundle(bad, VerifyOptions(trust=keys.ca))


def test_tampered_streamed_image_fails_without_switching_slots(cli, sandbox, keys, make_spec, tmp_path: Path) -> None:
    """installed-directly streams into the slot and checks the hash at the end:
    the inactive slot may hold a partial write, but the update fails, the
    running slot is untouched and the boot environment does not switch."""
    spec = make_spec(slot_a=str(sandbox.slot_a), slot_b=str(sandbox.slot_b), image_size=300 * 1024)
    spec.write_text(spec.read_text().replace("    type: raw\n", "    type: raw\n    installed-directly: true\n"))
    swu = tmp_path / "direct.swu"
    cli("bundle", spec, "-o", swu, *keys.signing_args(), check=True)
    bad = tampered(swu, tmp_path / "bad.swu", "rootfs.img", flip_at=-1)
    assert sandbox.install(bad, keys.ca, check_only=True).returncode != 0
    result = sandbox.install(bad, keys.ca)
    assert result.returncode != 0 and SUCCESS_MARKER not in result.output
    assert sandbox.untouched(sandbox.slot_a)
    env = sandbox.printenv()
    assert env["rootpart"] == "2" and env["upgrade_available"] == "0"
    # The transaction marker stays set: the bootloader knows slot B is not good.
    assert env.get("recovery_status") in {"in_progress", "failed"}


def test_foreign_signer_is_refused(cli, sandbox, keys, foreign_keys, make_spec, tmp_path: Path) -> None:
    spec = make_spec(slot_a=str(sandbox.slot_a), slot_b=str(sandbox.slot_b))
    foreign = tmp_path / "foreign.swu"
    cli("bundle", spec, "-o", foreign, *foreign_keys.signing_args(), check=True)
    before = sandbox.printenv()
    for check_only in (True, False):
        result = sandbox.install(foreign, keys.ca, check_only=check_only)
        assert result.returncode != 0 and SUCCESS_MARKER not in result.output
    _assert_nothing_changed(sandbox, before)
    # Installed with its own CA it is fine: the refusal was about trust alone.
    assert sandbox.install(foreign, foreign_keys.ca, check_only=True).succeeded


def test_encrypted_image_installs_with_the_aes_key(cli, sandbox, keys, make_spec, tmp_path: Path) -> None:
    spec = make_spec(slot_a=str(sandbox.slot_a), slot_b=str(sandbox.slot_b), encrypted=True, image_size=100_000)
    swu = tmp_path / "enc.swu"
    cli("bundle", spec, "-o", swu, *keys.signing_args(), "--aes-key", keys.aes, check=True)
    without = sandbox.install(swu, keys.ca)
    assert without.returncode != 0
    assert sandbox.untouched(sandbox.slot_a)
    result = sandbox.install(swu, keys.ca, aes_key=keys.aes)
    assert result.succeeded, result.output
    image = _image(tmp_path)
    assert sandbox.slot_bytes(sandbox.slot_b)[: len(image)] == image
    assert sandbox.untouched(sandbox.slot_a)


def test_zlib_compressed_image_is_decompressed_into_the_slot(cli, sandbox, keys, make_spec, tmp_path: Path) -> None:
    spec = make_spec(slot_a=str(sandbox.slot_a), slot_b=str(sandbox.slot_b))
    plain = write_image(tmp_path / "plain.img", 700_000, seed=3).read_bytes()
    (tmp_path / "rootfs.img").write_bytes(gzip.compress(plain, mtime=0))
    spec.write_text(spec.read_text().replace("    type: raw\n", "    type: raw\n    compressed: zlib\n"
                                             "    installed-directly: true\n"))
    swu = tmp_path / "gz.swu"
    cli("bundle", spec, "-o", swu, *keys.signing_args(), check=True)
    result = sandbox.install(swu, keys.ca)
    assert result.succeeded, result.output
    assert sandbox.slot_bytes(sandbox.slot_b)[: len(plain)] == plain


def test_certificate_purpose_code_signing(cli, sandbox, keys, make_spec, tmp_path: Path) -> None:
    code = tmp_path / "code"
    cli("keys", "init", code, "--only", "swupdate", "--key-size", "2048", "--purpose", "codeSigning", check=True)
    spec = make_spec(slot_a=str(sandbox.slot_a), slot_b=str(sandbox.slot_b))
    swu = tmp_path / "code.swu"
    cli("bundle", spec, "-o", swu, "--key", code / "swupdate/signer.key", "--cert", code / "swupdate/signer.crt",
        check=True)
    ca = code / "swupdate/ca.crt"
    assert sandbox.install(swu, ca, check_only=True).returncode != 0  # default purpose: emailProtection
    assert sandbox.install(swu, ca, check_only=True, extra_args=["--cert-purpose", "codeSigning"]).succeeded


def test_self_signed_signer_is_its_own_trust_anchor(cli, sandbox, make_spec, tmp_path: Path) -> None:
    own = tmp_path / "own"
    cli("keys", "init", own, "--only", "swupdate", "--key-size", "2048", "--self-signed", check=True)
    spec = make_spec(slot_a=str(sandbox.slot_a), slot_b=str(sandbox.slot_b))
    swu = tmp_path / "own.swu"
    cert = own / "swupdate/signer.crt"
    cli("bundle", spec, "-o", swu, "--key", own / "swupdate/signer.key", "--cert", cert, check=True)
    assert sandbox.install(swu, cert).succeeded


def test_redundant_environment(cli, keys, make_spec, tmp_path: Path) -> None:
    sandbox = SwupdateSandbox(tmp_path / "redund", redundant=True)
    spec = make_spec(slot_a=str(sandbox.slot_a), slot_b=str(sandbox.slot_b))
    swu = tmp_path / "r.swu"
    cli("bundle", spec, "-o", swu, *keys.signing_args(), check=True)
    assert sandbox.install(swu, keys.ca).succeeded
    assert sandbox.printenv()["rootpart"] == "3"


def test_two_step_signed_bundle_installs(cli, sandbox, keys, make_spec, tmp_path: Path) -> None:
    spec = make_spec(slot_a=str(sandbox.slot_a), slot_b=str(sandbox.slot_b))
    unsigned = tmp_path / "u.swu"
    cli("bundle", spec, "-o", unsigned, "--unsigned", check=True)
    assert sandbox.install(unsigned, keys.ca, check_only=True).returncode != 0  # CMS is mandatory
    cli("sign", unsigned, *keys.signing_args(), check=True)
    assert sandbox.install(unsigned, keys.ca).succeeded


def test_a_leaf_given_as_ca_is_refused(sandbox, release, keys, cli) -> None:
    """The device refuses -k <signer.crt>; `pyvorin verify --cert signer.crt` must refuse too."""
    result = sandbox.install(release, keys.cert, check_only=True)
    assert result.returncode != 0, result.output
    ours = cli("verify", release, "--cert", keys.cert)
    assert ours.returncode == 1 and "self-signed CA" in ours.stderr, ours.stderr


@pytest.mark.parametrize("tail", [b"\0" * 512, b"\0" * 3, b"X" * 100, b"070701" + b"0" * 104])
def test_bytes_after_the_trailer_are_judged_as_the_device_judges_them(sandbox, release, keys, tmp_path: Path,
                                                                      tail: bytes) -> None:
    """``pyvorin verify`` judges bytes after the cpio trailer as the device does.

    The device's swupdate stops reading at ``TRAILER!!!`` (stream_interface.c
    reads at most 512 bytes of padding after it) and installs: nothing after
    the trailer is used, and the signed sw-description covers every member.
    So does ``verify``; were the device to start refusing, this fails."""
    from pyvorin.errors import PyvorinError
    from pyvorin.verify import VerifyOptions, verify_bundle

    bad = tmp_path / "tail.swu"
    bad.write_bytes(release.read_bytes() + tail)
    device = sandbox.install(bad, keys.ca, "stable,copy1")
    try:
        verify_bundle(bad, VerifyOptions(trust=keys.ca))
        ours = True
    except PyvorinError:
        ours = False
    assert ours == device.succeeded, device.output


def test_an_unknown_digest_in_signed_data_is_refused_by_both(sandbox, release, keys, tmp_path: Path) -> None:
    """SignedData.digestAlgorithms names an algorithm nobody knows; the signer's own stays SHA-256.

    OpenSSL, under the device's swupdate, sets up a digest per listed
    algorithm and fails; ``verify`` must not be the laxer of the two."""
    from pyvorin.errors import VerificationError
    from pyvorin.verify import VerifyOptions, verify_bundle

    from helpers import read_members, write_members

    sha256 = bytes.fromhex("0609608648016503040201")
    members = []
    for name, data in read_members(release):
        if name == "sw-description.sig":
            assert data.count(sha256) == 2  # digestAlgorithms, then the SignerInfo's
            data = data.replace(sha256, sha256[:-1] + b"\x7f", 1)
        members.append((name, data))
    bad = write_members(tmp_path / "digest.swu", members)
    before = sandbox.printenv()
    device = sandbox.install(bad, keys.ca, "stable,copy1")
    assert not device.succeeded, device.output
    _assert_nothing_changed(sandbox, before)
    with pytest.raises(VerificationError, match="unknown digest algorithm 2.16.840.1.101.3.4.2.127"):
        verify_bundle(bad, VerifyOptions(trust=keys.ca))


#: Where the second image of a shared slot starts: a FIT window at the end of the 4 MiB test slot.
FIT_OFFSET = 3 << 20


def _shared_slot_release(cli, keys, sandbox: SwupdateSandbox, tmp_path: Path, *, zlib: bool = False
                         ) -> tuple[Path, bytes, bytes]:
    """A bundle whose copies write rootfs.img from their slot's first byte and fit.itb from 3 MiB in it."""
    rootfs = write_image(tmp_path / "rootfs.img", 300 * 1024, seed=5).read_bytes()
    fit = write_image(tmp_path / "fit.itb", 200 * 1024, seed=6).read_bytes()
    rootfs_entry = "{file: rootfs.img, type: raw}"
    if zlib:  # as a full release ships its slot image: compressed, streamed into the slot
        (tmp_path / "rootfs.img.gz").write_bytes(gzip.compress(rootfs, mtime=0))
        rootfs_entry = "{file: rootfs.img.gz, type: raw, compressed: zlib, installed-directly: true}"
    spec = tmp_path / "shared.yaml"
    spec.write_text(textwrap.dedent(f"""\
        version: "2026.12.0"
        artifacts:
          rootfs.img: {rootfs_entry}
          fit.itb: {{file: fit.itb, type: raw}}
        machines:
          raspberrypi4-64:
            hardware-compatibility: ["1.0"]
            copy1:
              install:
                rootfs.img: {sandbox.slot_b}
                fit.itb: {{device: {sandbox.slot_b}, offset: 3M}}
              bootenv: {{rootpart: "3"}}
            copy2:
              install:
                rootfs.img: {sandbox.slot_a}
                fit.itb: {{device: {sandbox.slot_a}, offset: {FIT_OFFSET}}}
              bootenv: {{rootpart: "2"}}
        """))
    swu = tmp_path / "shared.swu"
    cli("bundle", spec, "-o", swu, *keys.signing_args(), check=True)
    return swu, rootfs, fit


@pytest.mark.parametrize("zlib", [False, True], ids=["plain", "zlib-streamed"])
def test_two_images_share_a_slot_at_their_offsets(cli, sandbox, keys, tmp_path: Path, zlib: bool) -> None:
    """The verified-boot layout: the image from the slot's first byte, the FIT image at an offset in
    the same slot, and every byte around them as it was (the raw handler neither truncates nor pads)."""
    swu, rootfs, fit = _shared_slot_release(cli, keys, sandbox, tmp_path, zlib=zlib)
    result = sandbox.install(swu, keys.ca, "stable,copy1")
    assert result.succeeded, result.output
    slot = sandbox.slot_bytes(sandbox.slot_b)
    assert len(slot) == sandbox.slot_size
    assert slot[: len(rootfs)] == rootfs
    assert slot[FIT_OFFSET: FIT_OFFSET + len(fit)] == fit
    for untouched in (slot[len(rootfs): FIT_OFFSET], slot[FIT_OFFSET + len(fit):]):
        assert untouched == bytes([FILL_BYTE]) * len(untouched)
    assert sandbox.untouched(sandbox.slot_a)
    assert sandbox.printenv()["rootpart"] == "3"


@pytest.mark.parametrize("member", ["rootfs.img", "fit.itb"])
def test_a_tampered_image_of_a_shared_slot_writes_neither(cli, sandbox, keys, tmp_path: Path, member: str) -> None:
    """Neither image is streamed: swupdate checks both hashes before it writes either, so a slot never
    holds a new image next to an old FIT image (or the reverse) from a bundle that was refused."""
    swu, _, _ = _shared_slot_release(cli, keys, sandbox, tmp_path)
    bad = tampered(swu, tmp_path / "bad.swu", member, flip_at=-1)
    before = sandbox.printenv()
    for check_only in (True, False):
        result = sandbox.install(bad, keys.ca, check_only=check_only)
        assert result.returncode != 0 and SUCCESS_MARKER not in result.output, result.output
    _assert_nothing_changed(sandbox, before)
