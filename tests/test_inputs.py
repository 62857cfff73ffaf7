"""Awkward inputs give the documented result or a clear error naming the file and what to change."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support.cli import run_cli
from support.data import FEATURES, make_frame, read_output, write_frame

import squall


def run_args(model: Path, inputs: str, out: Path, *extra: str) -> list[str]:
    return ["run", "--model", str(model), "--input", inputs, "--output", str(out), "--key", "id", "-q", *extra]


def quoted_newline_csv(path: Path, rows: int = 200, padding_rows: int = 0) -> pd.DataFrame:
    frame = make_frame(rows)
    frame["note"] = [f"line one\nline two of {i}" if i % 7 == 0 else f"plain {i}" for i in range(rows)]
    if padding_rows:
        pad = make_frame(padding_rows, seed=9, start=rows)
        pad["note"] = "p" * 40
        frame = pd.concat([pad, frame], ignore_index=True)
    frame.to_csv(path, index=False)
    return frame


def test_csv_with_newlines_inside_quotes_is_refused_unless_multiline_then_read_whole(linear_model, tmp_path):
    source = tmp_path / "notes.csv"
    frame = quoted_newline_csv(source)
    refused = run_cli(*run_args(linear_model, str(source), tmp_path / "a", "--features", ",".join(FEATURES)))
    assert refused.returncode == 2
    assert str(source) in refused.stderr and "multiline" in refused.stderr and "byte" in refused.stderr
    assert not (tmp_path / "a").exists()
    done = run_cli(*run_args(linear_model, str(source), tmp_path / "b", "--features", ",".join(FEATURES), "--multiline", "--chunk-rows", "10"))
    assert done.returncode == 0, done.stderr
    got = read_output(tmp_path / "b").set_index("id").sort_index()
    assert got.index.tolist() == frame["id"].tolist()
    np.testing.assert_array_equal(got["prediction"].to_numpy(), joblib.load(linear_model).predict(frame[FEATURES]))


def test_quoted_newline_past_the_sampled_head_fails_the_job_loudly_not_silently(linear_model, tmp_path):
    source = tmp_path / "late.csv"
    frame = quoted_newline_csv(source, rows=50, padding_rows=20_000)
    assert source.stat().st_size > 1 << 20
    spec = squall.JobSpec(model=str(linear_model), input=[str(source)], output=str(tmp_path / "out"), key=["id"], features=FEATURES, chunk_rows=2_000)
    result = squall.run(spec)
    torn = frame["note"].str.contains("\n").sum()
    assert (result.state, result.rows_out, result.error_rows) == ("FAILED", len(frame) - torn, 2 * torn)
    errors = pq.read_table(tmp_path / "out" / "_errors").to_pandas()
    assert all("multiline" in message for message in errors["message"])
    raw = source.read_bytes()
    assert all(raw[offset:].split(b"\n", 1)[0].count(b'"') % 2 == 1 for offset in errors["_offset"])
    assert "rows failed" in (result.message or "") and not (tmp_path / "out" / "_SUCCESS").exists()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_empty_and_header_only_files_contribute_no_rows(fmt, linear_model, tmp_path):
    folder = tmp_path / "in"
    frame = make_frame(300)
    write_frame(frame, folder / f"a.{fmt}", fmt)
    if fmt == "csv":
        (folder / "b.csv").write_text("id," + ",".join(FEATURES) + "\n")
        (folder / "c.csv").write_text("")
    elif fmt == "jsonl":
        (folder / "b.jsonl").write_text("")
        (folder / "c.jsonl").write_text("\n\n")
    else:
        write_frame(frame.iloc[:0], folder / "b.parquet", fmt)
    result = squall.run(squall.JobSpec(model=str(linear_model), input=[str(folder)], output=str(tmp_path / "out"), key=["id"]))
    assert result.state == "SUCCEEDED" and result.rows_out == 300
    assert sorted(read_output(tmp_path / "out")["id"]) == list(range(300))


def test_only_empty_inputs_finish_as_an_empty_successful_job(linear_model, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.jsonl").write_text("")
    result = squall.run(squall.JobSpec(model=str(linear_model), input=[str(tmp_path / "in")], output=str(tmp_path / "out"), features=FEATURES))
    assert (result.state, result.rows_in, result.chunks) == ("SUCCEEDED", 0, 0)
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_glob_that_matches_nothing_is_a_usage_error(linear_model, tmp_path):
    done = run_cli(*run_args(linear_model, str(tmp_path / "nothing-*.parquet"), tmp_path / "out"))
    assert done.returncode == 2
    assert "matched no files" in done.stderr and "nothing-*.parquet" in done.stderr
    assert not (tmp_path / "out").exists()


def test_missing_feature_column_names_the_file_and_the_column(linear_model, tmp_path):
    frame = make_frame(100).drop(columns=["f3"])
    write_frame(frame, tmp_path / "in" / "x.parquet", "parquet")
    done = run_cli(*run_args(linear_model, str(tmp_path / "in"), tmp_path / "out", "--features", ",".join(FEATURES)))
    assert done.returncode == 2
    assert "x.parquet" in done.stderr and "missing feature column(s) ['f3']" in done.stderr


def test_unknown_spec_field_and_bad_values_name_the_field(linear_model, tmp_path):
    spec_file = tmp_path / "job.toml"
    spec_file.write_text(f'model = "{linear_model}"\ninput = "x"\noutput = "y"\nchunk_row = 5\n')
    typo = run_cli("run", "--spec", str(spec_file))
    assert typo.returncode == 2 and "unknown spec field `chunk_row`; did you mean `chunk_rows`?" in typo.stderr
    bad = run_cli("run", "--model", str(linear_model), "--input", "x", "--output", "y", "--workers", "0")
    assert bad.returncode == 2 and "`workers`" in bad.stderr
    missing = run_cli("run", "--input", "x", "--output", "y")
    assert missing.returncode == 2 and "`model` is required" in missing.stderr


def test_missing_model_file_fails_before_any_work(tmp_path, dataset):
    folder, _ = dataset("parquet", rows=100)
    done = run_cli(*run_args(tmp_path / "nope.joblib", str(folder), tmp_path / "out"))
    assert done.returncode == 2 and "nope.joblib: no such model file" in done.stderr
    assert not (tmp_path / "out").exists()


def test_unloadable_model_fails_the_job_with_the_loader_error(tmp_path, dataset):
    folder, _ = dataset("parquet", rows=100)
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(b"not a pickle at all")
    done = run_cli(*run_args(broken, str(folder), tmp_path / "out"))
    assert done.returncode == 2
    assert "could not be loaded" in done.stderr and "broken.joblib" in done.stderr


def test_tsv_files_are_tab_separated_unless_a_delimiter_is_given(linear_model, tmp_path):
    frame = make_frame(300)
    (tmp_path / "in").mkdir()
    frame.to_csv(tmp_path / "in" / "data.tsv", sep="\t", index=False)
    result = squall.run(squall.JobSpec(model=str(linear_model), input=[str(tmp_path / "in")], output=str(tmp_path / "out"), key=["id"]))
    assert (result.state, result.rows_out) == ("SUCCEEDED", 300)
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    np.testing.assert_array_equal(got["prediction"].to_numpy(), joblib.load(linear_model).predict(frame[FEATURES]))


def test_a_duplicate_job_id_and_cancelling_a_finished_job_are_usage_errors(dataset, linear_model, tmp_path):
    folder, _ = dataset("parquet", rows=200)
    args = ["run", "--model", str(linear_model), "--input", str(folder), "--key", "id", "--job-id", "once", "-q"]
    assert run_cli(*args, "--output", str(tmp_path / "a")).returncode == 0
    again = run_cli(*args, "--output", str(tmp_path / "b"))
    assert again.returncode == 2 and "a job named 'once' already exists" in again.stderr
    cancelled = run_cli("cancel", "once")
    assert cancelled.returncode == 2 and "is SUCCEEDED, not running" in cancelled.stderr


def test_a_header_only_csv_without_a_final_line_break_contributes_no_rows(linear_model, tmp_path):
    folder = tmp_path / "in"
    frame = make_frame(300)
    write_frame(frame, folder / "a.csv", "csv")
    (folder / "b.csv").write_text("id," + ",".join(FEATURES))  # no line break after the header
    (folder / "c.csv").write_bytes(b"\xef\xbb\xbf\r\n")  # a byte-order mark and a blank line: no data either
    done = run_cli(*run_args(linear_model, str(folder), tmp_path / "out"))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("SUCCEEDED 300 rows")
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    np.testing.assert_array_equal(got["prediction"].to_numpy(), joblib.load(linear_model).predict(frame[FEATURES]))
    alone = run_cli(*run_args(linear_model, str(folder / "b.csv"), tmp_path / "alone", "--features", ",".join(FEATURES)))
    assert alone.returncode == 0 and "Traceback" not in alone.stderr, alone.stderr
    assert alone.stdout.strip().splitlines()[-1].startswith("SUCCEEDED 0 rows")
    assert (tmp_path / "alone" / "_SUCCESS").exists()


@pytest.mark.parametrize("content", [b"Read me first.\nThese files hold the churn data.\n", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 12], ids=["text", "binary"])
def test_a_folder_holding_one_non_data_file_read_as_csv_is_a_clear_usage_error(content, linear_model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "README").write_bytes(content)
    listed = run_cli(*run_args(linear_model, str(folder), tmp_path / "a", "--format", "csv"))
    assert listed.returncode == 2 and "Traceback" not in listed.stderr, listed.stderr
    assert f"{folder}: the directory holds no .parquet, .csv or .jsonl files (it holds README)" in listed.stderr
    assert "set `format`" in listed.stderr
    globbed = run_cli(*run_args(linear_model, str(folder / "*"), tmp_path / "b", "--format", "csv"))
    assert globbed.returncode == 2 and "Traceback" not in globbed.stderr, globbed.stderr
    reason = "missing key column(s) ['id']" if content.isascii() else "the first line is not UTF-8 text; is this a CSV file?"
    assert f"{folder / 'README'}: {reason}" in globbed.stderr.replace("\n", "")
    (folder / "README").rename(folder / "notes.csv")
    named = run_cli(*run_args(linear_model, str(folder), tmp_path / "c"))
    assert named.returncode == 2 and "Traceback" not in named.stderr, named.stderr
    assert f"{folder / 'notes.csv'}: {reason}" in named.stderr.replace("\n", "")
    assert not any((tmp_path / name).exists() for name in "abc")
