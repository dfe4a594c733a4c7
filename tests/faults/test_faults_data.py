"""Malformed data files: every bad row is counted, skipped and reported once with its line and reason; files
that cannot yield a problem fail naming what they hold."""
import json
import logging

import pytest

from rlvr_jax.data import DataFileError, load_dataset

GOOD = [{"id": "g1", "problem": "1+1?", "answer": "2"}, {"id": "g2", "problem": "2+2?", "answer": 4}]

# (name, raw bytes of one bad line, reason the loader must give, counted as malformed (else: skipped as blank))
BAD_LINES = [
    ("invalid_json", b'{"id": "b", "problem": "x", ', "invalid JSON", True),
    ("bad_utf8", b'{"id": "b", "problem": "caf\xe9?", "answer": "1"}', "not valid UTF-8 (byte 0xe9", True),
    ("array", b'[1, 2, 3]', "a JSON list, expected an object", True),
    ("string", b'"just a string"', "a JSON str, expected an object", True),
    ("number", b'42', "a JSON int, expected an object", True),
    ("null", b'null', "a JSON NoneType, expected an object", True),
    ("answer_list", b'{"id": "b", "problem": "x?", "answer": [1, 2]}', "field 'answer' is a list", True),
    ("answer_dict", b'{"id": "b", "problem": "x?", "answer": {"v": 1}}', "field 'answer' is a dict", True),
    ("answer_bool", b'{"id": "b", "problem": "x?", "answer": true}', "field 'answer' is a bool", True),
    ("problem_int", b'{"id": "b", "problem": 7, "answer": "1"}', "field 'problem' is a int", True),
    ("problem_list", b'{"id": "b", "problem": ["x"], "answer": "1"}', "field 'problem' is a list", True),
    ("id_list", b'{"id": ["b"], "problem": "x?", "answer": "1"}', "field 'id' is a list", True),
    ("metadata_str", b'{"id": "b", "problem": "x?", "answer": "1", "metadata": "m"}', "field 'metadata' is a str",
     True),
    ("task_int", b'{"id": "b", "problem": "x?", "answer": "1", "task": 3}', "field 'task' is a int", True),
    ("missing_answer", b'{"id": "b", "problem": "x?"}', "empty problem or answer", False),
    ("empty_answer", b'{"id": "b", "problem": "x?", "answer": "  "}', "empty problem or answer", False),
    ("null_problem", b'{"id": "b", "problem": null, "answer": "1"}', "empty problem or answer", False),
    ("empty_problem", b'{"id": "b", "problem": "", "answer": "1"}', "empty problem or answer", False),
]


def _write(path, lines: list[bytes], bom=False, crlf=False):
    sep = b"\r\n" if crlf else b"\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + sep.join(lines) + sep)


def _good_lines():
    return [json.dumps(r).encode() for r in GOOD]


@pytest.mark.parametrize("case", BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_one_bad_line_is_skipped_counted_and_reported(tmp_path, caplog, case):
    name, raw, reason, malformed = case
    g = _good_lines()
    f = tmp_path / "d.jsonl"
    _write(f, [g[0], raw, g[1]])
    with caplog.at_level(logging.WARNING, logger="rlvr_jax.data.datasets"):
        ds = load_dataset(str(f))
    assert [p.id for p in ds] == ["g1", "g2"] and [p.answer for p in ds] == ["2", "4"]
    if malformed:
        assert len(ds.malformed) == 1 and ds.skipped == []
        assert ds.malformed[0].where == f"{f}:2" and reason in ds.malformed[0].reason
        assert f"{f}:2" in caplog.text
    else:
        assert ds.skipped == ["b"] and ds.malformed == []
    assert reason in caplog.text
    assert len(caplog.records) == 1  # reported once


@pytest.mark.parametrize("bom,crlf", [(True, False), (False, True), (True, True)])
def test_bom_and_crlf_are_read(tmp_path, bom, crlf):
    f = tmp_path / "d.jsonl"
    _write(f, _good_lines(), bom=bom, crlf=crlf)
    ds = load_dataset(str(f))
    assert [(p.id, p.problem, p.answer) for p in ds] == [("g1", "1+1?", "2"), ("g2", "2+2?", "4")]
    assert ds.malformed == [] and ds.skipped == []


def test_many_bad_lines_all_named(tmp_path, caplog):
    lines = _good_lines() + [c[1] for c in BAD_LINES]
    f = tmp_path / "d.jsonl"
    _write(f, lines)
    with caplog.at_level(logging.WARNING, logger="rlvr_jax.data.datasets"):
        ds = load_dataset(str(f))
    n_mal = sum(c[3] for c in BAD_LINES)
    assert len(ds) == 2 and len(ds.malformed) == n_mal and len(ds.skipped) == len(BAD_LINES) - n_mal
    assert sorted(int(b.where.rsplit(":", 1)[1]) for b in ds.malformed) == [
        3 + i for i, c in enumerate(BAD_LINES) if c[3]]
    assert f"skipped {n_mal} malformed row(s)" in caplog.text


def test_duplicate_ids_reported(tmp_path, caplog):
    f = tmp_path / "d.jsonl"
    rows = GOOD + [{"id": "g1", "problem": "3+3?", "answer": "6"}]
    _write(f, [json.dumps(r).encode() for r in rows])
    with caplog.at_level(logging.WARNING, logger="rlvr_jax.data.datasets"):
        ds = load_dataset(str(f))
    assert ds.duplicate_ids == ["g1"] and len(ds) == 3
    assert "1 row(s) reuse an id already in the file: g1" in caplog.text


@pytest.mark.parametrize("content,match", [
    (b"", "holds no row"),
    (b"\n\n  \n", "holds no row"),
    (b'{"question_text": "x", "solution": "1"}\n', r"no column problem \(or question\) / answer.*"
                                                     r"\['question_text', 'solution'\]"),
    (b'{"id": "a", "problem": "x"}\n', r"no column answer.*\['id', 'problem'\]"),
    (b'{oops\n[1]\n', r"no usable row \(2 read, 0 with an empty problem or answer, 2 malformed"),
    (b'{"id": "a", "problem": "", "answer": "1"}\n', r"no usable row \(1 read, 1 with an empty"),
])
def test_files_without_usable_rows_fail_saying_why(tmp_path, content, match):
    f = tmp_path / "d.jsonl"
    f.write_bytes(content)
    with pytest.raises(DataFileError, match=match):
        load_dataset(str(f))


def test_parquet_wrong_columns_and_damage(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"q": "x", "a": "1"}]), tmp_path / "w.parquet")
    with pytest.raises(DataFileError, match=r"columns found are \['a', 'q'\]"):
        load_dataset(str(tmp_path / "w.parquet"))
    pq.write_table(pa.Table.from_pylist([{"problem": "x", "answer": "1"}]).slice(0, 0), tmp_path / "e.parquet")
    with pytest.raises(DataFileError, match="no readable row"):
        load_dataset(str(tmp_path / "e.parquet"))
    (tmp_path / "t.parquet").write_bytes(b"PAR1" + b"\0" * 10)
    with pytest.raises(DataFileError, match="t.parquet: cannot read as Parquet"):
        load_dataset(str(tmp_path / "t.parquet"))
