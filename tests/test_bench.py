"""mdengine bench on a tiny system: the JSON has every field, with sane values."""

import json
import subprocess
import sys

import yaml

from tests.conftest import REPO


def test_bench_json_fields(tmp_path):
    spec = {"system": {"lattice": {"kind": "fcc", "element": "Ar", "lattice_constant_A": 5.754,
                                   "repeats": [2, 2, 2], "displacement_A": 0.2}},
            "potential": {"kind": "lennard_jones", "cutoff_A": 4.5,
                          "species": {"Ar": {"epsilon_eV": 0.0104, "sigma_A": 3.4}}},
            "integrator": {"ensemble": "nve", "timestep_fs": 5.0},
            "velocities": {"temperature_K": 120.0}, "neighbor": {"skin_A": 0.5},
            "run": {"steps": 10}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run([sys.executable, "-m", "mdengine.cli", "bench", str(path), "--sizes", "1,2",
                             "--replicas", "1,2", "--steps", "50", "--repeats", "2", "--output-dir", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert (tmp_path / "out" / "bench.png").is_file()
    assert report["environment"]["backend"] == "cpu"
    assert report["environment"]["cpu_cores"] >= 1
    records = report["records"]
    assert [(r["atoms"], r["replicas"]) for r in records] == [(32, 1), (32, 2), (256, 1), (256, 2)]
    for record in records:
        assert record["compile_s"] > 0
        assert record["fused_steps_per_s"] > 0
        low, high = record["fused_steps_per_s_range"]
        assert low <= record["fused_steps_per_s"] <= high
        assert record["atom_steps_per_s"] == (record["fused_steps_per_s"] * record["atoms"]
                                              * record["replicas"])
        assert record["ns_per_day"] == record["fused_steps_per_s"] * 5.0 * 86400 / 1e6
        assert record["peak_host_memory_mib"] > 0
        assert record["neighbor_capacity"] > 0
