"""Structured logs: one JSON object per line on stdout, which journald stores
as the message (``journalctl -u pyvorin-edge-agent -o cat | jq``).  Not the
logging package: it drags in half the standard library on the image and we
need only this."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class JsonLog:
    def __init__(self, level: str = "info", stream: TextIO | None = None) -> None:
        self._threshold = LEVELS[level]
        self._stream = stream if stream is not None else sys.stdout
        # Handler threads log too: one line must never interleave with another.
        self._lock = threading.Lock()

    def log(self, level: str, event: str, **fields: Any) -> None:
        if LEVELS[level] < self._threshold:
            return
        now = time.time()
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
                  "level": level, "event": event, **fields}
        line = json.dumps(record, separators=(",", ":"), default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def debug(self, event: str, **fields: Any) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log("error", event, **fields)
