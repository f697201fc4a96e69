"""Bad input to the agent: one clear line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from agent_support import SERVICE_FILES, AgentStarter, Sources, needs_mount_namespace, scrubbed_env, write_config
from pyvorin_edge_agent import config


def run_agent(config_path: Path, *, wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(wrap or []), sys.executable, "-m", "pyvorin_edge_agent", "--config", str(config_path),
                           "run"], capture_output=True, text=True, env=scrubbed_env(), timeout=30, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyv-edge-agent: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(("text", "fragments"), [
    ("[agent\ndata_dir = '/x'\n", ("invalid TOML", "line 1")),
    ("[agent]\ndata_dir = \n", ("invalid TOML", "line 2")),
    ("[agent]\ndata_dri = '/data'\n", ("unknown key 'data_dri' in [agent]",)),
    ("[htpp]\nport = 1\n", ("unknown table [htpp]",)),
    ("[http]\nport = 'eighty'\n", ("[http] port must be an integer",)),
    ("[http]\nport = true\n", ("[http] port must be an integer",)),
    ("[http]\nport = 70000\n", ("[http] port must be 0..65535",)),
    ("[http]\nhost = '0.0.0.0'\n", ("must be a loopback address",)),
    ("[thresholds]\ncpu_percent = 120\n", ("[thresholds] cpu_percent",)),
    ("[agent]\ndata_dir = 'relative'\n", ("data_dir must be an absolute path",)),
    ("[cloud]\nurl = 'ftp://x'\n", ("[cloud] url",)),
    ("agent = 3\n", ("'agent' must be a table",)),
])
def test_bad_config_is_one_line_exit_2(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert_one_line_error(run_agent(path), 2, str(path), *fragments)


def test_missing_config_is_one_line_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run_agent(tmp_path / "nope.toml"), 2, "config file not found")


def test_port_in_use_is_one_line_exit_1(tmp_path: Path, sources: Sources) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources, port=port))
    assert_one_line_error(result, 1, f"cannot listen on 127.0.0.1:{port}: address already in use")


def test_data_dir_that_is_a_file_is_one_line_exit_1(tmp_path: Path, sources: Sources) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_agent(write_config(tmp_path / "config.toml", blocker / "data", sources))
    assert_one_line_error(result, 1, f"data directory {blocker / 'data'} is not writable")


@needs_mount_namespace
def test_read_only_data_dir_is_one_line_exit_1(tmp_path: Path, sources: Sources) -> None:
    """As on the device if /data were mounted read-only: root cannot write there either."""
    data = tmp_path / "data"
    data.mkdir()
    script = f'mount -t tmpfs -o ro none {data} && exec "$@"'
    result = run_agent(write_config(tmp_path / "config.toml", data, sources),
                       wrap=["unshare", "-m", "sh", "-c", script, "sh"])
    assert_one_line_error(result, 1, f"data directory {data} is not writable", "Read-only file system")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits (see the read-only mount test)")
def test_unwritable_data_dir_is_one_line_exit_1(tmp_path: Path, sources: Sources) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o500)
    result = run_agent(write_config(tmp_path / "config.toml", data, sources))
    assert_one_line_error(result, 1, f"data directory {data} is not writable", "Permission denied")


def test_second_agent_on_the_same_data_dir_is_refused(tmp_path: Path, sources: Sources,
                                                       start_agent: AgentStarter) -> None:
    data = tmp_path / "data"
    start_agent(write_config(tmp_path / "a.toml", data, sources))
    result = run_agent(write_config(tmp_path / "b.toml", data, sources))
    assert_one_line_error(result, 1, "another pyv-edge-agent holds")


def test_shipped_config_is_valid_and_states_the_defaults() -> None:
    loaded = config.load(SERVICE_FILES / "config.toml")
    assert loaded == config.Config(source=loaded.source)
    assert loaded.thresholds == config.Thresholds(cpu_percent=85, disk_percent=90, thermal_celsius=75,
                                                  queue_depth=5000)
    assert (loaded.http.host, loaded.http.port, loaded.backup.keep) == ("127.0.0.1", 8080, 14)
    assert loaded.data_dir == Path("/data/pyvorin-edge")
