"""The scanned run loop: conservation, chunking, compilation, overflow redo, NaN stop."""

import mdtraj
import numpy as np
import pytest

from mdengine.config import InputError
from mdengine.simulation import SimulationError
from tests.conftest import argon_input, build, read_thermo, run


def final_frame(output_dir, name="trajectory.dcd"):
    return mdtraj.load(str(output_dir / name), top=str(output_dir / "trajectory.topology.pdb")).xyz[-1]


def test_nve_energy_conserved(tmp_path):
    # 256-atom LJ liquid, float64, 2 fs: total energy fluctuates but does not drift.
    spec = argon_input(repeats=(4, 4, 4), steps=1000, precision="float64",
                       integrator={"ensemble": "nve", "timestep_fs": 2.0})
    stats, thermo = run(spec, tmp_path)
    n_atoms, kT = 256, 8.617333262e-5 * 120
    # Fluctuations of velocity Verlet at 2 fs are ~1e-5 eV/atom; 1 % of kT per atom bounds them.
    assert stats.nve_max_deviation_eV_per_atom < 0.01 * kT
    assert abs(stats.nve_drift_eV_per_atom_per_ps) < 1e-4
    assert len(thermo["step"]) == 101
    assert stats.compilations == 1


def test_chunkings_bitwise_equal(tmp_path):
    # Chunk length must not change the arithmetic of a step (float64, CPU).
    finals = []
    for chunk in (300, 100, 70):
        spec = argon_input(steps=300, precision="float64", run={"steps": 300, "chunk_steps": chunk},
                           output={"frame_stride": 10, "thermo_stride": 10})
        stats, thermo = run(spec, tmp_path / str(chunk))
        finals.append((final_frame(tmp_path / str(chunk)), thermo["total_energy_eV"]))
        assert stats.compilations == 1
    for positions, energy in finals[1:]:
        assert np.array_equal(positions, finals[0][0])
        assert np.array_equal(energy, finals[0][1])


def test_overflow_redo_same_trajectory(tmp_path):
    # A perfect fcc lattice has 78 neighbors per atom within 9.9 Å (the next shell is at
    # 9.97 Å); the liquid it melts into has about 85. A list sized exactly for the lattice
    # (multiplier 1.0) must overflow; each overflow reallocates and redoes the chunk from
    # its start, so the trajectory equals that of a run allocated with room to spare.
    finals = {}
    for name, multiplier in (("tight", 1.0), ("roomy", 2.0)):
        spec = argon_input(steps=400, precision="float64", ensemble="nvt", temperature_K=300.0,
                           thermostat={"kind": "langevin", "friction_per_ps": 5.0},
                           neighbor={"skin_A": 1.4, "capacity_multiplier": multiplier},
                           run={"steps": 400, "chunk_steps": 50})
        spec["system"]["lattice"]["displacement_A"] = 0.0
        stats, _ = run(spec, tmp_path / name)
        finals[name] = (stats, final_frame(tmp_path / name))
    assert finals["tight"][0].reallocations >= 1
    assert finals["roomy"][0].reallocations == 0
    assert np.array_equal(finals["tight"][1], finals["roomy"][1])


def test_non_finite_stops_with_step(tmp_path):
    # A plug-in energy that is undefined below 2 Å, driven hot with a long step: the run must
    # stop at the first non-finite step, naming it, with every earlier sample readable.
    spec = argon_input(steps=400, integrator={"ensemble": "nve", "timestep_fs": 20.0},
                       temperature_K=3000.0, output={"frame_stride": 1, "thermo_stride": 1},
                       run={"steps": 400, "chunk_steps": 50})
    spec["potential"] = {"kind": "custom", "function": "log_barrier:log_barrier", "cutoff_A": 6.0,
                         "search_path": ["tests/plugins"]}
    with pytest.raises(SimulationError) as err:
        run(spec, tmp_path)
    message = str(err.value)
    assert "non-finite potential energy or positions at step" in message
    bad_step = int(message.split("at step ")[1].split()[0])
    thermo = read_thermo(tmp_path / "thermo.csv")
    assert thermo["step"][-1] == bad_step - 1
    assert np.all(np.isfinite(thermo["potential_energy_eV"]))
    frames = mdtraj.load(str(tmp_path / "trajectory.dcd"), top=str(tmp_path / "trajectory.topology.pdb"))
    assert frames.n_frames == bad_step


@pytest.mark.parametrize("thermostat", [
    {"kind": "csvr", "tau_fs": 100.0},
    {"kind": "langevin", "friction_per_ps": 5.0},
    {"kind": "nose_hoover", "tau_fs": 100.0, "chain_length": 3},
    {"kind": "nose_hoover", "tau_fs": 100.0, "chain_length": 1},
])
def test_nvt_mean_temperature(tmp_path, thermostat):
    # 256 atoms, 4,000 steps of 5 fs after 1,000 of equilibration at 120 K. Single-sample
    # spread is T·sqrt(2/N_f) ≈ 6 K; over ~200 thermostat periods the mean is good to ~1 %.
    spec = argon_input(steps=4000, ensemble="nvt", thermostat=thermostat, temperature_K=120.0,
                       output={"frame_stride": 1000, "thermo_stride": 10, "trajectory": None})
    spec["run"]["equilibration"] = {"steps": 1000, "temperature_K": 120.0, "thermostat": thermostat}
    stats, thermo = run(spec, tmp_path)
    main = thermo["temperature_K"][thermo["phase"] == "main"]
    assert np.mean(main) == pytest.approx(120.0, rel=0.03)
    # The conserved quantity (total energy minus thermostat heat) must not drift much.
    conserved = thermo["conserved_energy_eV"][thermo["phase"] == "main"]
    assert np.ptp(conserved) / 256 < 0.01 * 8.617e-5 * 120 * 5


def test_csvr_heats_from_rest(tmp_path):
    # Zero velocities: velocity rescaling must draw a direction, not divide by zero.
    spec = argon_input(steps=400, ensemble="nvt", thermostat={"kind": "csvr", "tau_fs": 50.0},
                       velocities={"source": "zero"})
    stats, thermo = run(spec, tmp_path)
    assert np.all(np.isfinite(thermo["temperature_K"]))
    assert thermo["temperature_K"][-1] > 30


def test_single_atom_nve(tmp_path):
    # One atom: no degrees of freedom after removing centre-of-mass motion; no NaN.
    spec = argon_input(steps=20)
    spec["system"] = {"structure": str(_one_atom(tmp_path)), "box_A": [20.0, 20.0, 20.0]}
    stats, thermo = run(spec, tmp_path / "out")
    assert np.all(thermo["temperature_K"] == 0)
    assert np.all(thermo["potential_energy_eV"] == 0)


def test_single_atom_nose_hoover_rejected(tmp_path):
    spec = argon_input(steps=20, ensemble="nvt", thermostat={"kind": "nose_hoover"})
    spec["system"] = {"structure": str(_one_atom(tmp_path)), "box_A": [20.0, 20.0, 20.0]}
    with pytest.raises(InputError) as err:
        build(spec)
    assert "no degrees of freedom" in str(err.value)


def test_tau_shorter_than_steps_rejected():
    spec = argon_input(ensemble="nvt", thermostat={"kind": "nose_hoover", "tau_fs": 1.0})
    with pytest.raises(InputError) as err:
        build(spec)
    assert "integrator.thermostat.tau_fs: 1.0 fs" in str(err.value)


def _one_atom(tmp_path):
    path = tmp_path / "one.xyz"
    path.write_text("1\n\nAr 1.0 2.0 3.0\n")
    return path


def test_half_skin_rebuild(tmp_path):
    # Two atoms approach from just outside the list radius (10.61 Å > 8.5 + 2.0 Å). The list
    # must be rebuilt before the pair is within the cutoff, so total energy stays constant.
    path = tmp_path / "pair.xyz"
    path.write_text('2\nLattice="40 0 0 0 40 0 0 0 40" Properties=species:S:1:pos:R:3:vel:R:3\n'
                    "Ar 10.0 20 20 0.002 0 0\nAr 20.61 20 20 -0.002 0 0\n")
    spec = argon_input(steps=3000, precision="float64",
                       integrator={"ensemble": "nve", "timestep_fs": 1.0},
                       neighbor={"skin_A": 2.0}, velocities={"source": "structure"},
                       output={"thermo_stride": 1, "frame_stride": 1000})
    spec["system"] = {"structure": str(path)}
    stats, thermo = run(spec, tmp_path / "out")
    total = thermo["total_energy_eV"]
    assert total[0] == pytest.approx(0.016561, abs=2e-6)
    assert np.max(np.abs(total - total[0])) < 1e-6
    # The force switches on at step 528, when the separation first drops below 8.5 Å.
    interacting = np.nonzero(thermo["potential_energy_eV"] != 0)[0]
    assert thermo["step"][interacting[0]] == 528


@pytest.mark.parametrize("extension", [".dcd", ".xtc", ".h5", ".nc"])
def test_trajectory_formats_round_trip(tmp_path, extension):
    spec = argon_input(steps=40, output={"trajectory": "traj" + extension, "frame_stride": 20,
                                         "wrap_positions": True})
    run(spec, tmp_path)
    path = tmp_path / ("traj" + extension)
    top = None if extension == ".h5" else str(tmp_path / "traj.topology.pdb")
    traj = mdtraj.load(str(path), top=top) if top else mdtraj.load(str(path))
    assert traj.n_frames == 3
    assert traj.n_atoms == 256
    # Box edge 4 × 5.754 Å = 2.3016 nm in every format.
    assert traj.unitcell_lengths[0, 0] == pytest.approx(2.3016, abs=1e-4)
    # Positions lie inside the box: the stored unit (Å or nm) was converted correctly.
    assert traj.xyz.max() < 2.3016 + 1e-3
    assert traj.xyz.max() > 2.0


def test_empty_neighbor_list_grows(tmp_path):
    # Thirteen atoms in a 100 Å box: no pair within the list radius, so the first list
    # contains no pair (one padding slot per atom in the dense layout). An approaching pair,
    # and a third atom that closes in on both, must be found by growing the list, energy
    # exactly 0 until then.
    rows = [(10, 10, 10), (10, 40, 10), (10, 70, 10), (40, 10, 40), (40, 40, 70), (70, 70, 10),
            (70, 10, 70), (10, 70, 70)]
    lines = [f"Ar {x} {y} {z} 0 0 0" for x, y, z in rows]
    lines += ["Ar 44 70 40 0.002 0 0", "Ar 56 70 40 -0.002 0 0", "Ar 50 70 52 0 0 -0.002",
              "Ar 44 10 90 0.002 0 0", "Ar 56 10 90 -0.002 0 0"]
    path = tmp_path / "thirteen.xyz"
    path.write_text('13\nLattice="100 0 0 0 100 0 0 0 100" Properties=species:S:1:pos:R:3:vel:R:3\n'
                    + "\n".join(lines) + "\n")
    spec = argon_input(steps=3000, precision="float64", velocities={"source": "structure"},
                       integrator={"ensemble": "nve", "timestep_fs": 1.0},
                       output={"thermo_stride": 50, "frame_stride": 1000})
    spec["system"] = {"structure": str(path)}
    stats, thermo = run(spec, tmp_path / "out")
    assert stats.reallocations >= 1
    # Separation 12 Å closes at 0.004 Å/fs: inside 8.5 Å only after step 875.
    early = thermo["step"] <= 850
    assert np.all(thermo["potential_energy_eV"][early] == 0)
    assert np.min(thermo["potential_energy_eV"]) < -0.005
    # Velocity-Verlet error of each 1 fs collision: about 5e-7 eV.
    assert np.max(np.abs(thermo["total_energy_eV"] - thermo["total_energy_eV"][0])) < 2e-6


def test_slab_all_pairs_refused(tmp_path):
    # A 20 Å side is under four list radii, so jax-md would search all 26,250² pairs
    # (about 7.7 GiB): refused before allocation, naming the side.
    spec = argon_input()
    spec["system"]["lattice"] = {"kind": "fcc", "element": "Ar", "lattice_constant_A": 5.754,
                                 "repeats": [4, 44, 44]}
    with pytest.raises(InputError) as err:
        build(spec)
    message = str(err.value)
    assert "all-pairs neighbor search" in message
    assert "23.02 Å is under 4 × 9.5 Å" in message


def test_unwrapped_output_long_stride(tmp_path):
    # One atom crossing a 20 Å box: sampled every 2,000 fs it moves exactly one box length
    # in x between frames, so only tracked images (not minimum-image unwrapping) recover
    # x(t) = x0 + 0.01 t and y(t) = y0 + 0.003 t (Å, t in fs).
    path = tmp_path / "one.xyz"
    path.write_text('1\nLattice="20 0 0 0 20 0 0 0 20" Properties=species:S:1:pos:R:3:vel:R:3\n'
                    "Ar 1.0 2.0 3.0 0.01 0.003 0.0\n")
    spec = argon_input(steps=10000, precision="float64", velocities={"source": "structure"},
                       integrator={"ensemble": "nve", "timestep_fs": 1.0},
                       output={"frame_stride": 2000, "thermo_stride": 1000})
    spec["system"] = {"structure": str(path)}
    run(spec, tmp_path / "out")
    xyz = final_frame_all(tmp_path / "out") * 10   # nm -> Å
    t = np.arange(6) * 2000.0
    np.testing.assert_allclose(xyz[:, 0, 0], 1.0 + 0.01 * t, atol=1e-3)
    np.testing.assert_allclose(xyz[:, 0, 1], 2.0 + 0.003 * t, atol=1e-3)


def test_wrapped_output_option(tmp_path):
    path = tmp_path / "one.xyz"
    path.write_text('1\nLattice="20 0 0 0 20 0 0 0 20" Properties=species:S:1:pos:R:3:vel:R:3\n'
                    "Ar 1.0 2.0 3.0 0.01 0.003 0.0\n")
    spec = argon_input(steps=4000, precision="float64", velocities={"source": "structure"},
                       integrator={"ensemble": "nve", "timestep_fs": 1.0},
                       output={"frame_stride": 1000, "thermo_stride": 1000, "wrap_positions": True})
    spec["system"] = {"structure": str(path)}
    run(spec, tmp_path / "out")
    xyz = final_frame_all(tmp_path / "out") * 10
    assert np.all(xyz >= 0)
    assert np.all(xyz < 20)
    # 4,000 fs at 0.01 Å/fs is 40 Å: two box lengths, back to x = 1 Å.
    assert xyz[-1, 0, 0] == pytest.approx(1.0, abs=1e-3)


def final_frame_all(output_dir):
    return mdtraj.load(str(output_dir / "trajectory.dcd"),
                       top=str(output_dir / "trajectory.topology.pdb")).xyz
