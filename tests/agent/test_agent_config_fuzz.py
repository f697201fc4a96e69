"""The agent's configuration loader against mutated genuine configurations.

A device reads /etc/pyvorin/edge-agent.toml from the /etc overlay on /data,
which an operator, a provisioning script or a broken disk may have written.
Whatever it holds, ``config.load`` returns a validated Config or raises
ConfigError with one printable line naming the file; nothing else escapes."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyvorin_edge_agent import config
from pyvorin_edge_agent.errors import AgentError

GENUINE = """\
[agent]
data_dir = "/data/pyvorin-edge"
sample_interval = 5.0
log_level = "info"

[http]
host = "127.0.0.1"
port = 8080

[thresholds]
cpu_percent = 85
disk_percent = 90

[cloud]
url = "https://fleet.example.com/api"
"""

HOSTILE_VALUES = ["-1", "0", "1e309", "-1e309", "nan", "inf", "9" * 40, '""', '"\\u0000"', '"../../etc/shadow"',
                  "[]", "{}", "[[1]]", "true", "1979-05-27T07:32:00Z", "07:32:00", '"' + "a" * 5000 + '"',
                  '"::1"', '"0.0.0.0"', '"localhost"', '"http://[::1"', "{ a = { b = { c = 1 } } }",
                  "[" * 200 + "]" * 200, "0x10", "1_000", "+inf", "'''\n'''", '"\\ud800"']
LINE_EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), st.sampled_from(["value", "drop", "twice", "key", "bytes"]),
                                st.sampled_from(HOSTILE_VALUES), st.text(max_size=10),
                                st.binary(min_size=1, max_size=6)), min_size=1, max_size=3)


def mutate(edits: list[tuple[int, str, str, str, bytes]]) -> bytes:
    lines = GENUINE.encode().splitlines()
    for at, kind, value, key, raw in edits:
        index = at % len(lines)
        line = lines[index]
        if kind == "value" and b"=" in line:
            lines[index] = line.split(b"=", 1)[0] + b"= " + value.encode()
        elif kind == "drop":
            del lines[index]
        elif kind == "twice":
            lines.insert(index, line)
        elif kind == "key":
            lines.insert(index, key.encode(errors="surrogatepass") + b" = " + value.encode(errors="surrogatepass"))
        else:
            lines[index] = line[: at % (len(line) + 1)] + raw + line[at % (len(line) + 1):]
        if not lines:
            break
    return b"\n".join(lines) + b"\n"


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=LINE_EDITS)
def test_any_configuration_loads_or_is_one_config_error(tmp_path: Path, edits: list[tuple[int, str, str, str, bytes]]
                                                        ) -> None:
    path = tmp_path / "edge-agent.toml"
    path.write_bytes(mutate(edits))
    try:
        loaded = config.load(path)
    except AgentError as exc:
        message = str(exc)
        assert type(exc).__name__ == "ConfigError", repr(exc)
        assert message.startswith(str(path)), message
        assert message.isprintable(), repr(message)
    else:
        assert loaded.data_dir.is_absolute()
        assert 0 <= loaded.http.port <= 65535
