"""Malformed inputs never crash a job or lose a good row: each bad record becomes an error row naming its
file and byte offset, and every good row is predicted exactly as in a clean run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from support.data import FEATURES, make_frame, read_output

import squall

BIG_LINE_BYTES = 100 * 1024 * 1024


def csv_line(values: list[object]) -> bytes:
    return ",".join(str(v) for v in values).encode()


def write_dirty_csv(path: Path, frame: pd.DataFrame) -> dict[int, str]:
    """The frame as CSV with a BOM and CRLF line ends, and bad records between good ones; returns {offset: kind}."""
    bad_lines = {
        40: (b'9001,"unterminated,1,2,3,4,5', "MalformedRecord"),
        80: (b"9002,1,2", "MalformedRecord"),
        120: (b"9003,\xff\xfe,1,2,3,4,5", "InvalidEncoding"),
        160: (b"9004,12abc,1,2,3,4,5", "ConversionError"),
        200: (b"9005," + b"7" * BIG_LINE_BYTES, "RecordTooLarge"),
    }
    offsets: dict[int, str] = {}
    with open(path, "wb") as out:
        out.write(b"\xef\xbb\xbf" + csv_line(["id", *FEATURES]) + b"\r\n")
        for index, row in enumerate(frame.itertuples(index=False)):
            if index in bad_lines:
                offsets[out.tell()] = bad_lines[index][1]
                out.write(bad_lines[index][0] + b"\r\n")
            out.write(csv_line([row.id, *(repr(float(v)) for v in row[1:])]) + b"\r\n")
    return offsets


def write_gzip_bomb(path: Path, frame: pd.DataFrame) -> int:
    """Gzip: header, half the rows, one 300 MB line of zeros, the other half; returns the bomb line's offset."""
    half = len(frame) // 2
    head = csv_line(["id", *FEATURES]) + b"\n" + b"".join(
        csv_line([row.id, *(repr(float(v)) for v in row[1:])]) + b"\n" for row in frame.iloc[:half].itertuples(index=False)
    )
    tail = b"".join(csv_line([row.id, *(repr(float(v)) for v in row[1:])]) + b"\n" for row in frame.iloc[half:].itertuples(index=False))
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(head)
        zeros = b"0" * (1 << 20)
        for _ in range(300):
            out.write(zeros)
        out.write(b"\n" + tail)
    return len(head)


def predictions(output: Path) -> pd.Series:
    return read_output(output).set_index("id").sort_index()["prediction_True"]


def assert_as_the_model_predicts(got: pd.Series, model_path: Path, frame: pd.DataFrame) -> None:
    """``got`` holds exactly ``frame``'s rows, each with the probability the model itself gives."""
    want = frame.set_index("id").sort_index()
    assert got.index.tolist() == want.index.tolist()
    np.testing.assert_allclose(got.to_numpy(), joblib.load(model_path).predict_proba(want[FEATURES])[:, 1], rtol=1e-12)


def test_bad_csv_records_become_error_rows_and_good_rows_match_a_clean_run(linear_model, tmp_path):
    frame = make_frame(1_000)
    clean, dirty = tmp_path / "clean", tmp_path / "dirty"
    clean.mkdir(), dirty.mkdir()
    frame.to_csv(clean / "data.csv", index=False)
    bad = write_dirty_csv(dirty / "data.csv", frame.iloc[:500])
    bomb_offset = write_gzip_bomb(dirty / "more.csv.gz", frame.iloc[500:])
    common = dict(model=str(linear_model), key=["id"], method="predict_proba", chunk_bytes=4_096, max_error_rate=0.01)
    assert squall.run(squall.JobSpec(input=[str(clean)], output=str(tmp_path / "a"), **common)).state == "SUCCEEDED"
    result = squall.run(squall.JobSpec(input=[str(dirty)], output=str(tmp_path / "b"), **common))
    assert (result.state, result.rows_out, result.error_rows) == ("PARTIAL", 1_000, 6)
    pd.testing.assert_series_equal(predictions(tmp_path / "b"), predictions(tmp_path / "a"))
    assert_as_the_model_predicts(predictions(tmp_path / "b"), linear_model, frame)
    errors = pq.read_table(tmp_path / "b" / "_errors").to_pandas()
    by_offset = {(Path(s).name, o): (t, m) for s, o, t, m in zip(errors["_source"], errors["_offset"], errors["error_type"], errors["message"])}
    expected = {("data.csv", offset): kind for offset, kind in bad.items()} | {("more.csv.gz", bomb_offset): "RecordTooLarge"}
    assert {key: kind for key, (kind, _) in by_offset.items()} == expected
    assert all(step == "read" for step in errors["step"])
    assert "12abc" in by_offset[("data.csv", max(o for o, k in bad.items() if k == "ConversionError"))][1]


def test_bad_jsonl_records_become_error_rows_and_good_rows_match_a_clean_run(linear_model, tmp_path):
    frame = make_frame(600)
    lines = [json.dumps(row).encode() for row in frame.to_dict(orient="records")]
    bad_lines = [b'{"id": 9001, "f0": 1', b"[1, 2, 3]", b'{"id": 9003, "f0": "abc", "f1": 1, "f2": 1, "f3": 1, "f4": 1, "f5": 1}', b'{"id": 9004, "f0": "\xff"}']
    (tmp_path / "clean").mkdir(), (tmp_path / "dirty").mkdir()
    (tmp_path / "clean" / "data.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    data, bad_offsets = bytearray(b"\xef\xbb\xbf"), []
    for index, line in enumerate(lines):
        if index % 150 == 75:
            bad_offsets.append(len(data))
            data += bad_lines[len(bad_offsets) - 1] + b"\r\n"
        data += line + b"\r\n"
    (tmp_path / "dirty" / "data.jsonl").write_bytes(bytes(data))
    common = dict(model=str(linear_model), key=["id"], method="predict_proba", chunk_bytes=8_192, max_error_rate=0.01)
    assert squall.run(squall.JobSpec(input=[str(tmp_path / "clean")], output=str(tmp_path / "a"), **common)).state == "SUCCEEDED"
    result = squall.run(squall.JobSpec(input=[str(tmp_path / "dirty")], output=str(tmp_path / "b"), **common))
    assert (result.state, result.rows_out, result.error_rows) == ("PARTIAL", 600, 4)
    pd.testing.assert_series_equal(predictions(tmp_path / "b"), predictions(tmp_path / "a"))
    assert_as_the_model_predicts(predictions(tmp_path / "b"), linear_model, frame)
    errors = pq.read_table(tmp_path / "b" / "_errors").to_pandas()
    assert sorted(errors["_offset"]) == bad_offsets
    assert sorted(errors["error_type"]) == ["ConversionError", "InvalidEncoding", "MalformedRecord", "MalformedRecord"]
    assert np.all(errors["_source"].str.endswith("data.jsonl"))


def test_csv_files_may_order_their_columns_differently(linear_model, tmp_path):
    frame = make_frame(400)
    (tmp_path / "in").mkdir()
    frame.iloc[:200].to_csv(tmp_path / "in" / "a.csv", index=False)
    reordered = frame.iloc[200:][["id", *reversed(FEATURES)]]
    reordered.to_csv(tmp_path / "in" / "b.csv", index=False)
    result = squall.run(squall.JobSpec(model=str(linear_model), input=[str(tmp_path / "in")], output=str(tmp_path / "out"), key=["id"], method="predict_proba"))
    assert result.state == "SUCCEEDED"
    want = pd.Series(joblib.load(linear_model).predict_proba(frame[FEATURES])[:, 1], index=frame["id"], name="prediction_True")
    pd.testing.assert_series_equal(predictions(tmp_path / "out"), want.rename_axis("id"), check_names=False)


def test_blank_looking_lines_and_split_records_cost_one_row_not_the_chunk(linear_model, tmp_path):
    frame = make_frame(100)
    lines = [json.dumps(row) for row in frame.to_dict(orient="records")]
    two_on_one = lines[10] + lines[11]
    body = "\n".join(lines[:10] + ["   ", two_on_one] + lines[12:]) + "\n"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data.jsonl").write_text(body)
    csv_body = frame.to_csv(index=False).replace(f"\n{frame['id'][20]},", f"\n{frame['id'][20]}\r,", 1)
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "data.csv").write_text(csv_body)
    for folder, expected_errors in ((tmp_path / "in", 1), (tmp_path / "csv", 1)):
        out = tmp_path / f"out-{folder.name}"
        result = squall.run(squall.JobSpec(model=str(linear_model), input=[str(folder)], output=str(out), key=["id"], max_error_rate=0.05))
        assert result.error_rows == expected_errors and result.state == "PARTIAL"
        lost = [10, 11] if folder.name == "in" else [20]
        assert result.rows_out == 100 - len(lost)
        got = read_output(out).set_index("id").sort_index()["prediction"]
        want = frame[~frame["id"].isin(lost)]
        assert got.index.tolist() == want["id"].tolist()
        np.testing.assert_array_equal(got.to_numpy(), joblib.load(linear_model).predict(want[FEATURES]))
