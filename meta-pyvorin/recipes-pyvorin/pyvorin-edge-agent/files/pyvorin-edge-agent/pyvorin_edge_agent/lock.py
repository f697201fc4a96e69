"""One agent per data directory: an flock held for the process's life.  restore
takes the same lock, so it can never swap databases under a running agent.
The kernel drops the lock when the process dies, even by SIGKILL."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pyvorin_edge_agent.errors import StorageError

LOCK_NAME = ".agent.lock"


class DataDirLock:
    def __init__(self, data_dir: Path, purpose: str) -> None:
        self.path = data_dir / LOCK_NAME
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise StorageError(f"data directory {data_dir} is not writable: {exc.strerror}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._fd)
            raise StorageError(f"cannot {purpose}: another pyv-edge-agent holds {self.path} "
                               "(stop pyvorin-edge-agent.service first)") from exc

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
