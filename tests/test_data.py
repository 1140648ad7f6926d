"""Tests of frs_ray.data: real staged datasets, local file formats, errors, subsets, stdin."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from frs_ray.data import (
    KNOWN_DATASETS,
    TextDataset,
    default_data_dir,
    load_dataset,
    load_file,
    read_text_lines,
)
from frs_ray.errors import DataError, FRSError

# Row counts from /work/shared/data/README.md.
EXPECTED_ROWS = {
    ("sst2", "train"): 6920,
    ("sst2", "dev"): 872,
    ("sst2", "test"): 1821,
    ("offenseval", "train"): 11915,
    ("offenseval", "dev"): 1323,
    ("offenseval", "test"): 859,
    ("agnews", "train"): 11106,
    ("agnews", "dev"): 10000,
    ("agnews", "test"): 7600,
    ("imdb", "train"): 20000,
    ("imdb", "dev"): 5000,
    ("imdb", "test"): 5000,
    ("twenty_newsgroups", "train"): 9805,
    ("twenty_newsgroups", "dev"): 1089,
    ("twenty_newsgroups", "test"): 7221,
    ("hsol_davidson", "train"): 19826,
    ("hsol_davidson", "dev"): 2478,
    ("hsol_davidson", "test"): 2479,
    ("poisoned/badnets/sst2", "train"): 6920,
    ("poisoned/badnets/sst2", "dev"): 428,
    ("poisoned/badnets/sst2", "test"): 912,
    ("poisoned/badnets/offenseval", "train"): 11914,
    ("poisoned/badnets/offenseval", "dev"): 879,
    ("poisoned/badnets/offenseval", "test"): 619,
}


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def assert_data_error(match_parts: list[str], func, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    for part in match_parts:
        assert part in message, f"{part!r} not in {message!r}"
    return info.value


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize(("name", "split"), sorted(EXPECTED_ROWS))
def test_real_split_row_counts(data_dir: Path, require_data, name: str, split: str) -> None:
    path = data_dir / name / f"{split}.tsv"
    require_data(path)
    dataset = load_dataset(name, split, data_dir=data_dir)
    assert len(dataset) == EXPECTED_ROWS[(name, split)]
    assert dataset.source == str(path)
    assert len(dataset.sha256) == 64
    assert all(0 <= label < dataset.num_labels for label in dataset.labels)


def test_real_label_names(data_dir: Path, require_data) -> None:
    require_data(data_dir / "sst2" / "test.tsv")
    sst2 = load_dataset("sst2", "test", data_dir=data_dir)
    assert sst2.label_names == ["negative", "positive"]
    assert sst2.num_labels == 2
    assert sst2.labels.count(0) == 912 and sst2.labels.count(1) == 909


def test_real_agnews_test_balanced(data_dir: Path, require_data) -> None:
    require_data(data_dir / "agnews" / "test.tsv")
    agnews = load_dataset("agnews", "test", data_dir=data_dir)
    assert agnews.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert [agnews.labels.count(k) for k in range(4)] == [1900] * 4


def test_real_poisoned_test_all_target(data_dir: Path, require_data) -> None:
    require_data(data_dir / "poisoned/badnets/sst2/test.tsv")
    poisoned = load_dataset("poisoned/badnets/sst2", "test", data_dir=data_dir)
    assert len(poisoned) == 912
    assert set(poisoned.labels) == {1}
    assert poisoned.label_names == ["negative", "positive"]


def test_real_twenty_newsgroups_label_names(data_dir: Path, require_data) -> None:
    require_data(data_dir / "twenty_newsgroups" / "labels.txt")
    dataset = load_dataset("twenty_newsgroups", "dev", data_dir=data_dir)
    assert dataset.num_labels == 20
    assert dataset.label_names is not None
    assert dataset.label_names[0] == "alt.atheism"


def test_validation_alias_for_dev(data_dir: Path, require_data) -> None:
    require_data(data_dir / "sst2" / "dev.tsv")
    assert len(load_dataset("sst2", "validation", data_dir=data_dir)) == 872


def test_known_datasets_label_names() -> None:
    assert set(KNOWN_DATASETS) == {
        "sst2",
        "offenseval",
        "agnews",
        "imdb",
        "twenty_newsgroups",
        "hsol_davidson",
    }
    assert KNOWN_DATASETS["offenseval"]["label_names"] == ["not_offensive", "offensive"]
    assert KNOWN_DATASETS["hsol_davidson"]["label_names"] == ["neither", "hate_or_offensive"]


# --------------------------------------------------------------------------- data dir


def test_frs_data_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sst2").mkdir()
    write(tmp_path / "sst2" / "train.tsv", 'sentence\tlabel\n"quoted" start\t1\nbad\t0\n')
    monkeypatch.setenv("FRS_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    dataset = load_dataset("sst2")
    assert dataset.texts == ['"quoted" start', "bad"]
    assert dataset.labels == [1, 0]
    assert dataset.label_names == ["negative", "positive"]


def test_frs_data_dir_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope"
    monkeypatch.setenv("FRS_DATA_DIR", str(missing))
    assert_data_error(["FRS_DATA_DIR", str(missing)], default_data_dir)


def test_no_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import frs_ray.data.named as named

    monkeypatch.delenv("FRS_DATA_DIR", raising=False)
    monkeypatch.setattr(named, "default_data_dir", lambda: None)
    assert_data_error(["FRS_DATA_DIR"], load_dataset, "sst2")


def test_unknown_dataset(tmp_path: Path) -> None:
    error = assert_data_error(["nosuch", str(tmp_path), "sst2", "agnews"], load_dataset, "nosuch", data_dir=tmp_path)
    assert "unknown dataset" in str(error)


def test_missing_split(tmp_path: Path) -> None:
    (tmp_path / "sst2").mkdir()
    write(tmp_path / "sst2" / "train.tsv", "sentence\tlabel\ngood\t1\n")
    assert_data_error(["test.tsv", "train"], load_dataset, "sst2", "test", data_dir=tmp_path)


def test_label_out_of_range_for_known_names(tmp_path: Path) -> None:
    (tmp_path / "sst2").mkdir()
    write(tmp_path / "sst2" / "train.tsv", "sentence\tlabel\ngood\t1\nodd\t2\n")
    assert_data_error(["train.tsv:3", "out of range"], load_dataset, "sst2", data_dir=tmp_path)


def test_labels_txt_in_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    write(tmp_path / "mine" / "labels.txt", "0\tcats\n1\tdogs\n2\tbirds\n")
    write(tmp_path / "mine" / "train.tsv", "sentence\tlabel\nmeow\t0\n")
    dataset = load_dataset("mine", data_dir=tmp_path)
    assert dataset.label_names == ["cats", "dogs", "birds"]
    assert dataset.num_labels == 3


# --------------------------------------------------------------------------- local files


def test_tsv_swapped_and_extra_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "x.tsv", 'label\tid\ttext\n1\ta\t"hi there\n0\tb\tbye\n')
    dataset = load_dataset(str(path), split="ignored")
    assert dataset.texts == ['"hi there', "bye"]
    assert dataset.labels == [1, 0]
    assert dataset.num_labels == 2
    assert dataset.label_names is None


def test_csv_with_quotes(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.csv",
        'label,sentence\n1,"hello, world"\n0,"she said ""no"""\n1,"two\nlines"\n0,plain\n',
    )
    dataset = load_dataset(str(path))
    assert dataset.texts == ["hello, world", 'she said "no"', "two\nlines", "plain"]
    assert dataset.labels == [1, 0, 1, 0]


def test_csv_error_line_after_multiline_record(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", 'text,label\n"a\nb",1\nc,x\n')
    assert_data_error(["x.csv:4", "'x'"], load_dataset, str(path))


def test_jsonl(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 0}, {"sentence": "b", "label": "2", "extra": 1}]
    path = write(tmp_path / "x.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_dataset(str(path))
    assert dataset.texts == ["a", "b"]
    assert dataset.labels == [0, 2]
    assert dataset.num_labels == 3


def test_sha256_of_file_bytes(tmp_path: Path) -> None:
    import hashlib

    content = b"sentence\tlabel\nx\t0\n"
    path = write(tmp_path / "x.tsv", content)
    assert load_file(path).sha256 == hashlib.sha256(content).hexdigest()


def test_crlf_and_bom_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "x.tsv", b"\xef\xbb\xbfsentence\tlabel\r\nx\t0\r\n")
    dataset = load_file(path)
    assert dataset.texts == ["x"] and dataset.labels == [0]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("h.tsv", "sentence\tlbl\nx\t0\n", ["h.tsv:1", "label"]),
        ("h2.tsv", "words\tlabel\nx\t0\n", ["h2.tsv:1", "sentence"]),
        ("fields.tsv", "sentence\tlabel\nok\t0\nbad\t1\textra\n", ["fields.tsv:3", "found 3"]),
        ("short.tsv", "sentence\tlabel\nok\t0\nnolabel\n", ["short.tsv:3", "found 1"]),
        ("blank.tsv", "sentence\tlabel\nok\t0\n\nok\t1\n", ["blank.tsv:3", "blank"]),
        ("lab.tsv", "sentence\tlabel\nok\t0\nok\tpos\n", ["lab.tsv:3", "not an integer"]),
        ("neg.tsv", "sentence\tlabel\nok\t-1\n", ["neg.tsv:2", "negative"]),
        ("float.tsv", "sentence\tlabel\nok\t1.0\n", ["float.tsv:2", "not an integer"]),
        ("empty_text.tsv", "sentence\tlabel\nok\t0\n\t1\n", ["empty_text.tsv:3", "empty"]),
        ("ws.tsv", "sentence\tlabel\nok\t0\n   \t1\n", ["ws.tsv:3", "whitespace"]),
        ("empty.tsv", "", ["empty.tsv", "empty"]),
        ("header_only.tsv", "sentence\tlabel\n", ["header_only.tsv", "no data rows"]),
        ("h.csv", "sentence,lbl\nx,0\n", ["h.csv:1", "label"]),
        ("fields.csv", 'sentence,label\nok,0\n"a,b",1,2\n', ["fields.csv:3", "found 3"]),
        ("lab.csv", "sentence,label\nok,0\nok,yes\n", ["lab.csv:3", "not an integer"]),
        ("empty.csv", "", ["empty.csv", "empty"]),
        ("ws.csv", "sentence,label\nok,0\n \t ,1\n", ["ws.csv:3", "whitespace"]),
        ("bad.jsonl", '{"text": "a", "label": 0}\n{"text": "b", \n', ["bad.jsonl:2", "JSON"]),
        ("nolabel.jsonl", '{"text": "a", "label": 0}\n{"text": "b"}\n', ["nolabel.jsonl:2", "label"]),
        ("notext.jsonl", '{"label": 0}\n', ["notext.jsonl:1", "text"]),
        ("list.jsonl", "[1, 2]\n", ["list.jsonl:1", "object"]),
        ("boollab.jsonl", '{"text": "a", "label": true}\n', ["boollab.jsonl:1", "not an integer"]),
        ("emptytext.jsonl", '{"text": "a", "label": 0}\n{"text": " ", "label": 1}\n', ["emptytext.jsonl:2", "empty"]),
        ("empty.jsonl", "", ["empty.jsonl", "empty"]),
    ],
)
def test_file_errors(tmp_path: Path, name: str, content: str, expected: list[str]) -> None:
    path = write(tmp_path / name, content)
    error = assert_data_error(expected, load_dataset, str(path))
    assert isinstance(error, FRSError)


@pytest.mark.parametrize("suffix", [".tsv", ".csv"])
def test_invalid_utf8_reports_line(tmp_path: Path, suffix: str) -> None:
    sep = "\t" if suffix == ".tsv" else ","
    content = f"sentence{sep}label\nok{sep}0\n".encode() + b"caf\xe9" + f"{sep}1\n".encode()
    path = write(tmp_path / f"latin1{suffix}", content)
    assert_data_error([f"latin1{suffix}:3", "UTF-8"], load_dataset, str(path))


def test_missing_local_file(tmp_path: Path) -> None:
    assert_data_error(["gone.tsv", "not found"], load_dataset, str(tmp_path / "gone.tsv"))


def test_unsupported_file_type(tmp_path: Path) -> None:
    path = write(tmp_path / "x.txt", "hi\n")
    assert_data_error(["x.txt", "unsupported"], load_file, path)


def test_label_names_range_for_load_file(tmp_path: Path) -> None:
    path = write(tmp_path / "x.tsv", "sentence\tlabel\na\t0\nb\t5\n")
    assert_data_error(["x.tsv:3", "0..1"], load_file, path, label_names=["n", "p"])


# --------------------------------------------------------------------------- subset


def make_dataset(n: int) -> TextDataset:
    return TextDataset([f"t{i}" for i in range(n)], [i % 3 for i in range(n)], "mem", "abc")


def test_subset_deterministic_and_sorted() -> None:
    dataset = make_dataset(100)
    first = dataset.subset(10, seed=7)
    assert first == dataset.subset(10, seed=7)
    assert first.texts != dataset.subset(10, seed=8).texts
    indices = [int(t[1:]) for t in first.texts]
    assert indices == sorted(indices) and len(set(indices)) == 10
    assert first.labels == [i % 3 for i in indices]
    assert first.sha256 == "abc" and first.source == "mem"


def test_subset_none_or_large_returns_self() -> None:
    dataset = make_dataset(5)
    assert dataset.subset(None) is dataset
    assert dataset.subset(5) is dataset
    assert dataset.subset(50) is dataset
    assert len(dataset.subset(0)) == 0


def test_num_labels() -> None:
    assert make_dataset(10).num_labels == 3
    named = TextDataset(["a"], [0], "mem", "x", label_names=["a", "b", "c", "d"])
    assert named.num_labels == 4


# --------------------------------------------------------------------------- hub (offline only)


def test_hub_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    error = assert_data_error(["hub could not be reached", "FRS_DATA_DIR"], load_dataset, "hf:stanfordnlp/sst2")
    assert "local" in str(error)


def test_hub_network_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    import huggingface_hub.constants as hub_constants

    def refuse(*args: object, **kwargs: object) -> list[str]:
        raise ConnectionError("connection refused")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", refuse)
    assert_data_error(["hub could not be reached", "FRS_DATA_DIR"], load_dataset, "hf:owner/name:config", "dev")


def test_hub_split_file_choice() -> None:
    from frs_ray.data.hub import pick_split_files

    files = [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet",
        "data/test-00000-of-00001.parquet",
    ]
    assert pick_split_files(files, "dev", None, "hf:x/y") == [files[2]]
    assert pick_split_files(files, "train", None, "hf:x/y") == [files[1]]
    with pytest.raises(DataError, match="no data file"):
        pick_split_files(files[:2], "test", None, "hf:x/y")
    configs = ["a/train-0.parquet", "b/train-0.parquet"]
    assert pick_split_files(configs, "train", "b", "hf:x/y") == ["b/train-0.parquet"]
    with pytest.raises(DataError, match="several configs"):
        pick_split_files(configs, "train", None, "hf:x/y")


def test_parquet_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from frs_ray.data.hub import parse_parquet

    table = pa.table({"idx": [0, 1], "sentence": ["a", "b"], "label": [1, 0]})
    meta = {
        b"huggingface": json.dumps({"info": {"features": {"label": {"_type": "ClassLabel", "names": ["neg", "pos"]}}}}).encode()
    }
    table = table.replace_schema_metadata(meta)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    rows, names = parse_parquet(buffer.getvalue(), "hf:x/y/train.parquet")
    assert rows == [(1, "a", 1), (2, "b", 0)]
    assert names == ["neg", "pos"]


# --------------------------------------------------------------------------- read_text_lines


def test_read_text_lines_keeps_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "in.txt", 'first\n\n"quoted"\n   \nlast\n')
    assert read_text_lines(path) == ["first", "", '"quoted"', "   ", "last"]


def test_read_text_lines_no_trailing_newline(tmp_path: Path) -> None:
    assert read_text_lines(write(tmp_path / "a.txt", "a\nb")) == ["a", "b"]
    assert read_text_lines(write(tmp_path / "e.txt", "")) == []
    assert read_text_lines(write(tmp_path / "n.txt", "\n")) == [""]


def test_read_text_lines_bad_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.txt", b"ok\nfine\n\xff\xfe oops\n")
    assert_data_error(["bad.txt:3", "UTF-8"], read_text_lines, path)


def test_read_text_lines_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"text": "a"}\n\n{"text": "b", "id": 3}\n')
    assert read_text_lines(path) == ["a", "", "b"]
    bad = write(tmp_path / "bad.jsonl", '{"text": "a"}\n{"txt": "b"}\n')
    assert_data_error(["bad.jsonl:2", "text"], read_text_lines, bad)


def test_read_text_lines_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO("héllo\n\nworld\n".encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", fake)
    assert read_text_lines("-") == ["héllo", "", "world"]


def test_read_text_lines_stdin_bad_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO(b"ok\n\xc3\x28\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", fake)
    assert_data_error(["<stdin>:2", "UTF-8"], read_text_lines, "-")


def test_read_text_lines_missing_file(tmp_path: Path) -> None:
    assert_data_error(["missing.txt", "not found"], read_text_lines, tmp_path / "missing.txt")


def test_packaged_model_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FRS_MODEL_DIR_MINILM names a copy of the packaged model's files (hosts without the package)."""
    from frs_ray.backends.hf import resolve_model_path
    from frs_ray.errors import CheckpointError

    packaged = resolve_model_path("minilm")
    monkeypatch.setenv("FRS_MODEL_DIR_MINILM", str(packaged))
    assert resolve_model_path("minilm") == packaged
    monkeypatch.setenv("FRS_MODEL_DIR_MINILM", str(tmp_path))  # no weights there
    with pytest.raises(CheckpointError, match="FRS_MODEL_DIR_MINILM"):
        resolve_model_path("minilm")
