"""The administrator account recipe: its key check run on keys made by the
real ``ssh-keygen``, its sudoers rule judged by ``visudo``, and the sshd
policy that makes the image's key file the only one sshd reads."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import ROOT, RecipeData, RecipeFatal, recipe_functions, require

RECIPE = ROOT / "meta-pyvorin/recipes-core/pyvorin-admin/pyvorin-admin_1.0.bb"
SUDOERS = RECIPE.parent / "files/pyvorin-admin.sudoers.in"


def recipe_keys() -> Callable[[str], list[str]]:
    """The recipe's own pyvorin_admin_keys(), with a stub bb and its defaults."""
    types_default = re.search(r'^PYVORIN_ADMIN_KEY_TYPES \?\?= "(.*?)"$', RECIPE.read_text(), re.M | re.S)
    assert types_default
    data = RecipeData({"PYVORIN_ADMIN_USER": "ops",
                       "PYVORIN_ADMIN_KEY_TYPES": types_default.group(1).replace("\\\n", " ")})
    function = recipe_functions(RECIPE)["pyvorin_admin_keys"]
    return lambda path: function(data, path)


def keygen(tmp_path: Path, kind: str, bits: int | None = None) -> Path:
    require("ssh-keygen")
    key = tmp_path / f"id_{kind}_{bits or 0}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *(["-b", str(bits)] if bits else []), "-N", "",
                    "-C", f"ops@{kind}", "-f", str(key)], check=True)
    return key


def test_real_public_keys_pass_with_options_and_comments(tmp_path: Path) -> None:
    ed25519 = keygen(tmp_path, "ed25519").with_suffix(".pub").read_text().strip()
    ecdsa = keygen(tmp_path, "ecdsa", 384).with_suffix(".pub").read_text().strip()
    rsa = keygen(tmp_path, "rsa", 3072).with_suffix(".pub").read_text().strip()
    keys = tmp_path / "authorized_keys"
    keys.write_text(f"# fleet operators\n{ed25519}\n\nfrom=\"10.20.0.0/16\",no-agent-forwarding {ecdsa}\n{rsa}\n")
    assert recipe_keys()(str(keys)) == [ed25519, f"from=\"10.20.0.0/16\",no-agent-forwarding {ecdsa}", rsa]
    # ssh-keygen reads the same file as three keys.
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(keys)], capture_output=True, text=True, check=True)
    assert len(listed.stdout.splitlines()) == 3


@pytest.mark.parametrize("case, message", [
    ("private", "private key"),
    ("rsa2048", "RSA key of 2048 bits"),
    ("dsa-type", "not a public key of an allowed type"),
    ("mismatch", "is a ssh-ed25519 key, the line says ecdsa-sha2-nistp256"),
    ("garbage", "not valid base64"),
    ("empty", "has no public key"),
    ("missing", "must name an authorized_keys file"),
])
def test_bad_key_files_stop_the_build_naming_the_problem(tmp_path: Path, case: str, message: str) -> None:
    keys = tmp_path / "authorized_keys"
    if case == "private":
        keys.write_text(keygen(tmp_path, "ed25519").read_text())
    elif case == "rsa2048":
        keys.write_text(keygen(tmp_path, "rsa", 2048).with_suffix(".pub").read_text())
    elif case == "dsa-type":
        keys.write_text("ssh-dss AAAAB3NzaC1kc3MAAACBAP8= old@key\n")
    elif case == "mismatch":
        blob = keygen(tmp_path, "ed25519").with_suffix(".pub").read_text().split()[1]
        keys.write_text(f"ecdsa-sha2-nistp256 {blob} liar\n")
    elif case == "garbage":
        keys.write_text("ssh-ed25519 not*base64 x\n")
    elif case == "empty":
        keys.write_text("# nobody yet\n")
    with pytest.raises(RecipeFatal, match=re.escape(message)):
        recipe_keys()(str(keys))


def test_truncated_blob_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "authorized_keys"
    keys.write_text("ssh-ed25519 " + base64.b64encode(b"\x00\x00").decode() + "\n")
    with pytest.raises(RecipeFatal):
        recipe_keys()(str(keys))


def test_visudo_accepts_the_rendered_sudoers_rule(tmp_path: Path) -> None:
    require("visudo")
    rule = tmp_path / "50-pyvorin-admin"
    rule.write_text(SUDOERS.read_text().replace("@USER@", "ops"))
    rule.chmod(0o440)
    result = subprocess.run(["visudo", "-c", "-f", str(rule)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken"
    broken.write_text(rule.read_text().replace("NOPASSWD:", "NOPASSWORD:"))
    broken.chmod(0o440)
    assert subprocess.run(["visudo", "-c", "-f", str(broken)], capture_output=True, check=False).returncode != 0
