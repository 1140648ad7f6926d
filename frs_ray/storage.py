"""Folders built once and put in place atomically (model zoo entries, defenses' cached models)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable


def build_once(out: Path, marker: str, build_into: Callable[[Path], Any]) -> None:
    """Build ``out`` (complete when ``out/marker`` exists) unless it is there: into a folder of this process, then
    renamed into place; a copy finished meanwhile by another process is kept and ours dropped."""
    if (out / marker).is_file():
        return
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    build_into(tmp)
    if (out / marker).is_file():
        shutil.rmtree(tmp)
        return
    if out.exists():
        shutil.rmtree(out)  # an interrupted build (no marker)
    os.replace(tmp, out)
