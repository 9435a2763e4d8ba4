"""One training run per output folder: a lock file that names the process holding the folder.

Two trainings writing into one ``--output_dir`` overwrite each other's checkpoints and crash late (Ignite
removes a checkpoint file the other run already removed). The training config claims the folder first
(``initialize``, rank 0 only): ``<output_dir>/.training.lock`` holds the claiming process's host and pid and
is removed when that process exits. A lock left by a process that no longer runs on this host (a crash, a
killed job) is taken over with a warning, so re-running a command to resume it still works; so is a lock
that names no process and is older than :data:`EMPTY_LOCK_AGE_S` (a crash between creating it and writing it).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time
from pathlib import Path

from rggan.errors import InputError

__all__ = ["EMPTY_LOCK_AGE_S", "LOCK_NAME", "claim_output_dir"]

LOCK_NAME = ".training.lock"
#: seconds after which a lock naming no process counts as left by a crash (a live claim writes it at once)
EMPTY_LOCK_AGE_S = 10.0

logger = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _release(path: Path, pid: int) -> None:
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def claim_output_dir(output_dir: str | os.PathLike) -> Path:
    """Claim ``output_dir`` for this process until it exits.

    Args:
        output_dir: the run's output folder (created if missing).

    Returns:
        The lock file's path.

    Raises:
        InputError: another training process (alive on this host, or on another host) holds the folder; the
            message names it and says what to do.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}
            host, pid = holder.get("host"), holder.get("pid")
            if not isinstance(pid, int):  # empty or unreadable: being written now, or left by a crash
                try:
                    age = time.time() - path.stat().st_mtime
                except FileNotFoundError:
                    continue  # released meanwhile
                if age > EMPTY_LOCK_AGE_S:
                    logger.warning("%s: taking over a lock that names no process (%.0f s old)", path, age)
                    path.unlink(missing_ok=True)
                    continue
                raise InputError(
                    f"{folder} is being claimed by another training run (lock file {path}, {age:.0f} s old, "
                    "names no process yet): use another --output_dir, or retry in a few seconds."
                ) from None
            if host == me["host"] and isinstance(pid, int) and pid != me["pid"] and not _alive(pid):
                logger.warning("%s: taking over the lock of process %d, which no longer runs", path, pid)
                path.unlink(missing_ok=True)
                continue
            if host == me["host"] and pid == me["pid"]:
                return path  # claimed already (the config's initialize ran twice)
            raise InputError(
                f"{folder} is in use by another training run (process {pid} on {host}, lock file {path}): "
                "use another --output_dir, or wait for that run to end. If no such run exists, delete the "
                "lock file."
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        atexit.register(_release, path, me["pid"])
        return path
    raise InputError(f"{path}: could not claim the output folder; delete the lock file and retry")
