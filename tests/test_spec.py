"""Spec resolution: defaults < spec file < SQUALL_* environment < explicit options, with messages that name the field."""

from __future__ import annotations

import pytest

from squall.backends.ray.options import RayOptions
from squall.errors import SpecError
from squall.spec import build_spec, field_names, load_spec_file


def test_later_sources_override_earlier_ones_field_by_field(tmp_path):
    spec_file = tmp_path / "job.toml"
    spec_file.write_text('model = "m.joblib"\ninput = ["a.parquet"]\noutput = "out"\nworkers = 3\nbatch-size = 10\n')
    spec = build_spec(
        load_spec_file(spec_file),
        explicit={"workers": 5, "key": "id,region"},
        environ={"SQUALL_BATCH_SIZE": "20", "SQUALL_WORKERS": "4", "SQUALL_METHOD": "predict_proba"},
    )
    assert spec.workers == 5
    assert spec.batch_size == 20
    assert spec.method == "predict_proba"
    assert spec.key == ["id", "region"]
    assert spec.input == ["a.parquet"] and spec.chunk_rows is None and spec.max_attempts == 3


def test_every_field_has_a_description_for_the_cli_and_readme():
    from squall.spec import JobSpec

    assert all(JobSpec.model_fields[name].description for name in field_names())


def test_batch_size_is_rows_or_auto_from_every_source():
    base = {"model": "m", "input": "a", "output": "o"}
    assert build_spec(explicit={**base, "batch_size": "auto"}, environ={}).batch_size == "auto"
    assert build_spec(explicit={**base, "batch_size": "4096"}, environ={}).batch_size == 4096
    assert build_spec(explicit=base, environ={"SQUALL_BATCH_SIZE": "auto"}).batch_size == "auto"
    assert build_spec({**base, "batch_size": 128}, environ={}).batch_size == 128


def test_errors_name_the_field_and_what_was_given():
    with pytest.raises(SpecError, match=r"field `chunk_rows`: .*greater than 0.*\(got -1\)"):
        build_spec(explicit={"model": "m", "input": "a", "output": "o", "chunk_rows": -1}, environ={})
    for bad in (-1, 0, "fast", "1.5"):
        with pytest.raises(SpecError, match=r"field `batch_size`: give a positive number of rows, or `auto`"):
            build_spec(explicit={"model": "m", "input": "a", "output": "o", "batch_size": bad}, environ={})
    with pytest.raises(SpecError, match=r"field `method`: .*'predict'.*\(got 'guess'\)"):
        build_spec(explicit={"model": "m", "input": "a", "output": "o", "method": "guess"}, environ={})
    with pytest.raises(SpecError, match="`output` is required"):
        build_spec(explicit={"model": "m", "input": "a"}, environ={})


def test_a_broken_spec_file_names_the_file(tmp_path):
    spec_file = tmp_path / "job.toml"
    spec_file.write_text("model = \n")
    with pytest.raises(SpecError, match="job.toml is not valid TOML"):
        load_spec_file(spec_file)
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec_file(tmp_path / "missing.toml")


def test_storage_options_come_as_a_table_from_a_file_and_as_json_from_the_environment_or_cli(tmp_path):
    spec_file = tmp_path / "job.toml"
    spec_file.write_text('model = "m"\ninput = ["s3://b/in/"]\noutput = "s3://b/out"\nstorage_options = { anon = true }\n')
    assert build_spec(load_spec_file(spec_file), environ={}).storage_options == {"anon": True}
    environ = {"SQUALL_STORAGE_OPTIONS": '{"profile": "batch"}'}
    assert build_spec(load_spec_file(spec_file), environ=environ).storage_options == {"profile": "batch"}
    explicit = {"storage_options": '{"client_kwargs": {"region_name": "eu-west-1"}}'}
    spec = build_spec(load_spec_file(spec_file), explicit=explicit, environ=environ)
    assert spec.storage_options == {"client_kwargs": {"region_name": "eu-west-1"}}
    with pytest.raises(SpecError, match=r"field `storage_options`: give a JSON object"):
        build_spec(load_spec_file(spec_file), explicit={"storage_options": "anon=true"}, environ={})


def test_a_backend_ray_table_selects_ray_and_sets_its_fields_and_the_pool_size(tmp_path):
    spec_file = tmp_path / "job.toml"
    spec_file.write_text(
        'model = "m.joblib"\ninput = ["s3://b/in"]\noutput = "s3://b/out"\n'
        '[backend.ray]\naddress = "auto"\nnum-cpus = 2\nnum_gpus = 0.5\nmemory = 2048\n'
        'min_workers = 2\nmax_workers = 8\nruntime_env = { env_vars = { HF_HOME = "/mnt/hf" } }\n'
    )
    spec = build_spec(load_spec_file(spec_file))
    ray = spec.backend_settings()
    assert isinstance(ray, RayOptions)
    assert (spec.backend, ray.address, ray.num_cpus, ray.num_gpus, ray.memory) == ("ray", "auto", 2, 0.5, 2048)
    assert (spec.workers, ray.max_workers) == (2, 8)
    assert ray.runtime_env == {"env_vars": {"HF_HOME": "/mnt/hf"}}
    assert spec.resolved_threads() == 2
    assert build_spec(load_spec_file(spec_file), explicit={"backend": "local"}).backend == "local"


def test_backend_fields_that_contradict_each_other_are_refused_with_what_to_use():
    base = {"model": "m", "input": "a", "output": "o"}
    with pytest.raises(SpecError, match=r"on Ray give each worker GPUs with `ray_num_gpus`"):
        build_spec(explicit={**base, "backend": "ray", "gpus": 1})
    with pytest.raises(SpecError, match=r"`ray_max_workers` \(2\) is below `workers` \(4\)"):
        build_spec(explicit={**base, "workers": 4, "ray_max_workers": 2})
    with pytest.raises(SpecError, match=r"unknown spec field `ray_adress`; did you mean `ray_address`"):
        build_spec({**base, "ray_adress": "auto"})
    with pytest.raises(SpecError, match=r"field `ray_runtime_env`: give a JSON object"):
        build_spec(explicit={**base, "ray_runtime_env": "{not json"})


def test_two_backend_tables_are_refused(tmp_path):
    spec_file = tmp_path / "job.toml"
    spec_file.write_text('model = "m"\ninput = ["a"]\noutput = "o"\n[backend.ray]\naddress = "auto"\n[backend.local]\nx = 1\n')
    with pytest.raises(SpecError, match=r"give one \[backend.NAME\] table, not 2"):
        load_spec_file(spec_file)
