"""One run at a time in a run folder: ``aca-run.lock``, held with ``flock`` while a run
writes there. The kernel releases the lock when its process ends, however it ends, so a
run killed with ``kill -9`` leaves no lock behind that would block its resume."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from aca.errors import ConfigError

LOCK_NAME = "aca-run.lock"


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(path.read_text())})"
    return ""


@contextlib.contextmanager
def run_folder_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock for the body; a ConfigError naming the folder and the
    process that holds it when another run does."""
    path = out_dir / LOCK_NAME
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise ConfigError(f"run folder {out_dir} is in use by another aca-run"
                              f"{_holder(path)}; wait for it to finish, or choose another "
                              "folder with hydra.run.dir=PATH") from None
        # The holder before us may have removed the file between our open and our lock:
        # then we locked a file no one else will see, and try again.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                break
        os.close(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, str(os.getpid()).encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(descriptor)
