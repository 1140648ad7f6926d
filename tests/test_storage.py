"""frs_ray.storage: cache entries built once, safe when several processes build the same entry at once."""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from pathlib import Path

import pytest

from frs_ray.storage import build_once, file_lock, write_atomic


def _builder(text: str, delay: float = 0.0):
    def build(tmp: Path) -> None:
        assert ".building-" in tmp.name and not tmp.exists()
        tmp.mkdir(parents=True)
        (tmp / "model.bin").write_text(text)
        time.sleep(delay)
        (tmp / "done.json").write_text("{}")

    return build


def _race(out: str, text: str, delay: float, start, results) -> None:
    start.wait()
    placed = build_once(Path(out), "done.json", _builder(text, delay))
    # what this process uses after build_once returned: it must never change under it afterwards
    results.put((text, placed, (Path(out) / "model.bin").read_text()))


def test_concurrent_builders_agree_on_one_entry_and_leave_nothing_behind(tmp_path):
    out = tmp_path / "zoo" / "entry"
    ctx = mp.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(out), f"p{i}", 0.05 * (i % 3), start, results)) for i in range(6)]
    for p in procs:
        p.start()
    start.set()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    final = (out / "model.bin").read_text()
    assert sum(placed for _, placed, _ in got) == 1  # exactly one copy was put in place ...
    assert {seen for _, _, seen in got} == {final}  # ... and every process saw that one, never a replaced one
    assert next(text for text, placed, _ in got if placed) == final
    assert sorted(p.name for p in out.parent.iterdir()) == [".entry.lock", "entry"]  # no .building- leftovers


def test_a_finished_entry_is_kept_and_a_marker_less_one_replaced(tmp_path):
    out = tmp_path / "entry"
    assert build_once(out, "done.json", _builder("first"))
    assert not build_once(out, "done.json", lambda tmp: pytest.fail("a finished entry is rebuilt"))
    assert (out / "model.bin").read_text() == "first"

    partial = tmp_path / "partial"  # an interrupted build: no marker
    partial.mkdir()
    (partial / "half.bin").write_text("x")
    assert build_once(partial, "done.json", _builder("whole"))
    assert sorted(p.name for p in partial.iterdir()) == ["done.json", "model.bin"]


def test_placing_waits_for_the_lock_and_keeps_a_copy_finished_meanwhile(tmp_path):
    """The check "finished meanwhile?" and the rename happen under the entry's lock, so a copy another process
    places while we build is never deleted."""
    out = tmp_path / "entry"
    result = {}
    with file_lock(tmp_path / ".entry.lock"):  # another process is placing its copy
        t = threading.Thread(target=lambda: result.setdefault("placed", build_once(out, "done.json", _builder("ours"))))
        t.start()
        time.sleep(0.5)
        assert t.is_alive() and not out.exists()  # built, waiting for the lock
        _builder("theirs")(tmp_path / ".entry.building-other")
        (tmp_path / ".entry.building-other").rename(out)
    t.join(timeout=30)
    assert result["placed"] is False and (out / "model.bin").read_text() == "theirs"
    assert not list(tmp_path.glob(".entry.building-*"))


def test_a_build_without_its_marker_or_raising_leaves_nothing(tmp_path):
    out = tmp_path / "entry"
    with pytest.raises(RuntimeError, match="wrote no done.json"):
        build_once(out, "done.json", lambda tmp: tmp.mkdir())
    with pytest.raises(ZeroDivisionError):
        build_once(out, "done.json", lambda tmp: (tmp.mkdir(), 1 / 0))
    assert not out.exists() and not list(tmp_path.glob(".entry.building-*"))


def test_write_atomic_replaces_whole_files_and_cleans_up(tmp_path):
    path = tmp_path / "ab" / "entry.json"
    write_atomic(path, json.dumps({"a": 1}))
    write_atomic(path, json.dumps({"a": 2}))
    assert json.loads(path.read_text()) == {"a": 2}

    with pytest.raises(TypeError):
        write_atomic(path, 123)  # type: ignore[arg-type]  # fails while writing
    assert json.loads(path.read_text()) == {"a": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["entry.json"]
