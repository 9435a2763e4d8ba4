"""One training run per output folder (rggan.run_lock)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from rggan.errors import InputError
from rggan.run_lock import EMPTY_LOCK_AGE_S, LOCK_NAME, _release, claim_output_dir


def test_a_live_holder_blocks_the_folder_and_a_dead_one_is_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid}))
        busy = rf"in use by another training run \(process {holder.pid} on .*--output_dir"
        with pytest.raises(InputError, match=busy):
            claim_output_dir(out)
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid  # the other run's lock is kept
    finally:
        holder.kill()
        holder.wait()
    path = claim_output_dir(out)  # its process is gone: the lock is stale and taken over
    assert json.loads(path.read_text()) == {"host": socket.gethostname(), "pid": os.getpid()}
    assert claim_output_dir(out) == path  # the same process claiming again is fine
    _release(path, os.getpid() + 1)  # another pid's release leaves it
    assert path.exists()
    _release(path, os.getpid())
    assert not path.exists()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "other-node", "pid": 1}))
    with pytest.raises(InputError, match="process 1 on other-node"):
        claim_output_dir(tmp_path)


def test_the_lock_is_gone_when_the_claiming_process_exits(tmp_path):
    code = f"from rggan.run_lock import claim_output_dir; print(claim_output_dir({str(tmp_path)!r}).exists())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_naming_no_process_is_taken_over_once_it_is_old(tmp_path):
    """A crash between creating the lock and writing it leaves an empty file: a young one is someone's claim in
    progress, an old one is stale."""
    lock = tmp_path / LOCK_NAME
    lock.write_text("")
    with pytest.raises(InputError, match="names no process yet"):
        claim_output_dir(tmp_path)
    assert lock.read_text() == ""
    old = lock.stat().st_mtime - 2 * EMPTY_LOCK_AGE_S
    os.utime(lock, (old, old))
    assert json.loads(claim_output_dir(tmp_path).read_text())["pid"] == os.getpid()
