"""One study run per run folder at a time: an exclusive lock that names its holder.

Two runs of one config would train the same fit in one folder, and one would record a resume nobody
interrupted. The lock is ``fcntl.flock`` on ``<run_dir>/.lock``: the kernel releases it when its
process ends in any way (even SIGKILL), so a lock file left behind by a dead run is stale by
construction and is taken over (with a note); the file records the holder's pid, host, start time,
command and purpose for the message a second run prints.

A short hold can be waited for instead of refused: a lock taken with ``wait_while=P`` blocks while the
holder's recorded purpose is ``P`` (two ``--fold`` runs started together: the second waits for the first
to finish preparing the study's data), and is refused as usual when the holder does anything else.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffkd_study.provenance import now_iso

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """``with RunLock(run_dir) as lock:`` holds the folder exclusively; ``lock.stale`` is the record of a
    dead holder whose lock was taken over (None when the folder was free).

    ``purpose`` is recorded with the holder. ``wait_while``: wait (polling every ``poll_s``) while the lock
    is held for that purpose, calling ``on_wait`` once with the holder's record; any other holder is refused.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, purpose: str = "run", wait_while: str | None = None,
                 on_wait: Callable[[dict[str, Any]], None] | None = None, poll_s: float = 1.0) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.purpose = purpose
        self.wait_while = wait_while
        self.on_wait = on_wait
        self.poll_s = poll_s
        self.stale: dict[str, Any] | None = None
        self._fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunLock:
        """Take the lock and record this process in it; returns the lock.

        Raises ``RunLockedError`` naming the holder when another live process has it (unless it holds it
        for the ``wait_while`` purpose: then this waits); the record left by a process that ended without
        releasing is kept in ``stale``.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        told = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                os.close(fd)
            holder = self._holder()
            # an empty record while locked: the holder is between taking the lock and writing it; look again
            if self.wait_while is not None and (not holder or holder.get("purpose") == self.wait_while):
                if not told and holder and self.on_wait is not None:
                    self.on_wait(holder)
                    told = True
                time.sleep(self.poll_s)
                continue
            raise RunLockedError(
                f"{self.path.parent} is in use by another run (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, started {holder.get('started', '?')}: {holder.get('command', '?')}); "
                "wait for it to finish, or give this run another --runs-dir")
        previous = self._holder()
        if previous.get("pid") is not None:
            # we hold the lock, so whoever wrote this record no longer does: its process ended
            self.stale = previous
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(),
                  "command": " ".join(sys.argv), "purpose": self.purpose}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the record and release the lock (nothing when not held)."""
        if self._fd is None:
            return
        # empty the record before unlocking: an empty file is a free folder, not a stale lock
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["LOCK_FILE", "RunLock", "RunLockedError"]
