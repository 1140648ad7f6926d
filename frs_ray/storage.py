"""Cache entries built once and put in place atomically (model zoo entries, defenses' cached models, converted
models, per-text cache files), safe when several processes build the same entry at once.

- :func:`build_once`: a folder, complete when its marker file exists. Each builder writes into a private folder
  beside the target; under a file lock, the first finished copy is renamed into place and later copies are
  dropped. A finished entry is never deleted or overwritten; only a folder without its marker (left by an
  interrupted build, read by nobody) is replaced.
- :func:`write_atomic`: one file, written to a private temporary file and renamed over the target, so a reader
  sees the old content or the new one, never a partial file; the temporary file is removed on failure.
- :func:`file_lock`: an exclusive ``fcntl`` lock, released by the OS if the holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Exclusive ``fcntl`` lock on ``path`` (created if missing; released by the OS if the process dies).
    ``on_wait`` is called once if another process holds the lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_once(out: Path, marker: str, build_into: Callable[[Path], Any]) -> bool:
    """Build the folder ``out`` (complete when ``out/marker`` exists) unless it is there.

    ``build_into(tmp)`` writes the entry into ``tmp``, a path beside ``out`` (``.<name>.building-<pid>-<id>``) that
    does not exist yet and belongs to this call only. Then, under the lock ``.<name>.lock`` beside ``out``: if
    another process finished ``out`` meanwhile, its copy is kept and ours removed; otherwise a marker-less leftover
    at ``out`` is removed and ``tmp`` renamed to ``out``. ``tmp`` never outlives the call (also on errors).

    Returns True when this call put its build in place, False when ``out`` was already complete or another
    process's copy won. Raises ``RuntimeError`` if ``build_into`` did not write ``marker``.
    """
    out = Path(out)
    if (out / marker).is_file():
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        build_into(tmp)
        if not (tmp / marker).is_file():
            raise RuntimeError(f"building {out}: the build wrote no {marker} into {tmp}")
        with file_lock(out.parent / f".{out.name}.lock"):
            if (out / marker).is_file():
                return False  # another process finished first: its copy is the one in use
            if out.exists():
                shutil.rmtree(out)  # an interrupted build (no marker); placing holds the lock, so nobody races us
            os.replace(tmp, out)
            return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
