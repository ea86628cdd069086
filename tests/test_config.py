"""Input validation: bad keys, types and values give one line naming the key."""

import pytest

from mdengine.config import InputError, load_input
from tests.conftest import argon_input

import yaml


def write(tmp_path, spec):
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_valid_input_loads(tmp_path):
    spec = load_input(write(tmp_path, argon_input()))
    assert spec.run.steps == 100


def test_unknown_key_named(tmp_path):
    spec = argon_input()
    spec["integrator"]["time_step_fs"] = 1.0
    with pytest.raises(InputError) as err:
        load_input(write(tmp_path, spec))
    assert "integrator.time_step_fs: unknown key" in str(err.value)
    assert "input.yaml" in str(err.value)


def test_negative_value_shows_value(tmp_path):
    spec = argon_input()
    spec["potential"]["species"]["Ar"]["sigma_A"] = -3.4
    with pytest.raises(InputError) as err:
        load_input(write(tmp_path, spec))
    message = str(err.value)
    assert "potential.species.Ar.sigma_A" in message
    assert "-3.4" in message


def test_wrong_choice_lists_allowed(tmp_path):
    spec = argon_input()
    spec["precision"] = "float16"
    with pytest.raises(InputError) as err:
        load_input(write(tmp_path, spec))
    assert "'float32' or 'float64'" in str(err.value)


def test_nvt_without_thermostat(tmp_path):
    spec = argon_input(ensemble="nvt", thermostat=None)
    with pytest.raises(InputError) as err:
        load_input(write(tmp_path, spec))
    assert "needs a 'thermostat'" in str(err.value)


def test_chain_length_zero_rejected(tmp_path):
    spec = argon_input(ensemble="nvt", thermostat={"kind": "nose_hoover", "chain_length": 0})
    with pytest.raises(InputError) as err:
        load_input(write(tmp_path, spec))
    assert "chain_length" in str(err.value)


def test_bad_trajectory_extension(tmp_path):
    spec = argon_input(output={"trajectory": "traj.pdb"})
    with pytest.raises(InputError) as err:
        load_input(write(tmp_path, spec))
    assert ".dcd" in str(err.value)


def test_not_yaml(tmp_path):
    path = tmp_path / "input.yaml"
    path.write_text("system: [unclosed\n")
    with pytest.raises(InputError) as err:
        load_input(path)
    assert "not valid YAML" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as err:
        load_input(tmp_path / "absent.yaml")
    assert "absent.yaml" in str(err.value)


def test_yaml_tags_not_executed(tmp_path):
    # safe_load refuses Python object tags instead of constructing them.
    path = tmp_path / "input.yaml"
    path.write_text("system: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(InputError):
        load_input(path)


def test_overrides_merge(tmp_path):
    spec = load_input(write(tmp_path, argon_input()), {"run": {"steps": 5}})
    assert spec.run.steps == 5
    assert spec.potential.cutoff_A == 8.5
