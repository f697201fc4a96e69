"""Fixtures for the edge agent tests; the helpers they use are in agent_support.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_support import AgentProcess, AgentStarter, Sources, scrubbed_env


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    directory = tmp_path / "sources"
    directory.mkdir()
    result = Sources(directory)
    result.write()
    return result


@pytest.fixture
def start_agent() -> Iterator[AgentStarter]:
    started: list[AgentProcess] = []

    def start(config: Path, *, env: dict[str, str] | None = None, wrap: list[str] | None = None) -> AgentProcess:
        argv = [*(wrap or []), sys.executable, "-m", "pyvorin_edge_agent", "--config", str(config), "run"]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=scrubbed_env(**(env or {})))
        agent = AgentProcess(process)
        agent.start_reader()
        started.append(agent)
        agent.port = int(agent.wait_event("listening")["port"])
        return agent

    yield start
    for agent in started:
        agent.stop()


