"""mdengine analyze on real runs: RDF peak of the LJ liquid, diffusion, bonds."""

import numpy as np
import pytest

from mdengine.analysis import analyze, diffusion_coefficient, mean_squared_displacement
from tests.conftest import argon_input, run


@pytest.fixture(scope="module")
def liquid_run(tmp_path_factory):
    # 256 LJ argon atoms at ρσ³ = 0.825 and T* = 1.0 (120 K): a liquid.
    output = tmp_path_factory.mktemp("liquid")
    spec = argon_input(steps=2000, ensemble="nvt", temperature_K=120.0,
                       thermostat={"kind": "csvr", "tau_fs": 100.0},
                       output={"frame_stride": 20, "thermo_stride": 20})
    spec["run"]["equilibration"] = {"steps": 1000, "temperature_K": 200.0,
                                    "thermostat": {"kind": "csvr", "tau_fs": 100.0}}
    run(spec, output)
    return output


def test_rdf_first_peak_lj_liquid(liquid_run, tmp_path):
    # The first peak of the LJ liquid near its triple point lies at about 1.1 σ = 3.74 Å.
    summary = analyze(liquid_run / "trajectory.dcd", tmp_path, skip=60)
    assert summary["rdf_first_peak_A"]["Ar-Ar"] == pytest.approx(1.1 * 3.40, abs=0.2)
    assert (tmp_path / "rdf.png").is_file()
    assert (tmp_path / "thermo.png").is_file()


def test_diffusion_lj_liquid(liquid_run, tmp_path):
    # Near ρ* = 0.83, T* = 1 the LJ liquid has D* ≈ 0.03–0.05; with σ²/τ = 5.39 Å²/ps for
    # argon that is 0.16–0.27 Å²/ps (liquid argon measures about 0.16 Å²/ps near 90 K).
    # Ten picoseconds give a noisy slope, so the bounds only separate a liquid from a solid
    # (D ≈ 0) or a gas.
    summary = analyze(liquid_run / "trajectory.dcd", tmp_path, skip=60)
    assert 0.1 < summary["diffusion_A2_per_ps"]["Ar"] < 0.5


def test_msd_of_straight_motion():
    # Ballistic motion at 0.01 Å/fs: MSD(lag) = (v·lag)², independent of origin.
    t = np.arange(50) * 10.0
    xyz = np.zeros((50, 2, 3))
    xyz[:, :, 0] = 0.01 * t[:, None]
    msd = mean_squared_displacement(xyz, 10)
    np.testing.assert_allclose(msd, (0.01 * t[:11]) ** 2)
    lag = np.arange(11) * 2.0
    assert diffusion_coefficient(lag, 6 * 0.5 * lag) == pytest.approx(0.5)
