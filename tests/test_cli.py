"""The command line as a user runs it: exit codes, messages, files."""

import subprocess
import sys

import yaml

from tests.conftest import REPO, argon_input


def mdengine(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "mdengine.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def write_input(tmp_path, spec, name="input.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_run_writes_outputs_and_summary(tmp_path):
    path = write_input(tmp_path, argon_input(steps=50))
    result = mdengine("run", path, "--output-dir", tmp_path / "out", "--steps", 40)
    assert result.returncode == 0, result.stderr
    for name in ("thermo.csv", "trajectory.dcd", "trajectory.topology.pdb",
                 "input.resolved.yaml", "mdengine.log"):
        assert (tmp_path / "out" / name).is_file()
    assert "ns/day" in result.stderr
    assert "NVE energy drift" in result.stderr
    resolved = yaml.safe_load((tmp_path / "out" / "input.resolved.yaml").read_text())
    assert resolved["run"]["steps"] == 40
    assert resolved["neighbor"]["capacity_multiplier"] == 1.25


def test_validate_reports_valid(tmp_path):
    path = write_input(tmp_path, argon_input())
    result = mdengine("validate", path)
    assert result.returncode == 0, result.stderr
    assert "valid; 256 atoms" in result.stdout


def test_invalid_input_one_line_no_files(tmp_path):
    spec = argon_input()
    spec["neighbor"]["skin_A"] = 4.0   # 8.5 + 4.0 Å exceeds half of the 23.0 Å box
    path = write_input(tmp_path, spec)
    out = tmp_path / "out"
    result = mdengine("run", path, "--output-dir", out)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "exceeds half the shortest cell height" in errors[0]
    assert not out.exists()


def test_unknown_key_exit_code(tmp_path):
    spec = argon_input()
    spec["run"]["stpes"] = 10
    result = mdengine("validate", write_input(tmp_path, spec))
    assert result.returncode == 2
    assert "run.stpes: unknown key" in result.stderr
