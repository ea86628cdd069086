"""Training, evaluating and running a learned potential end to end.

The datasets are made here: small molecules (three and four atoms, so
batches mix sizes) and a small periodic box, labelled with Morse bonds
between every pair, energies and forces computed in closed form with numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from mdengine.cli import main
from mdengine.config import InputError, InputSpec
from mdengine.learned.data import (batch_capacity, fit_shift_scale, iterate_batches, make_graphs,
                                   read_dataset, split_dataset)
from mdengine.learned.evaluate import make_predict_fn
from mdengine.learned.equivariant import EquivariantSpec
from mdengine.learned.model_io import load_model, new_model, save_model
from mdengine.learned.training import load_train_config
from mdengine.runner import execute
from mdengine.simulation import Simulation

# D (eV), α (1/Å), r0 (Å) per element pair.
MORSE = {("H", "O"): (0.2, 2.0, 1.0), ("H", "H"): (0.05, 1.5, 1.6), ("O", "O"): (0.1, 1.5, 2.5)}


def morse(elements, positions, cell=None):
    """Energy (eV) and forces (eV/Å) of Morse bonds between all pairs (minimum image if periodic)."""
    energy, forces = 0.0, np.zeros_like(positions)
    for i in range(len(positions)):
        for j in range(i + 1, len(positions)):
            d_eV, alpha, r0 = MORSE[tuple(sorted((elements[i], elements[j])))]
            delta = positions[i] - positions[j]
            if cell is not None:
                delta -= np.round(delta @ np.linalg.inv(cell)) @ cell
            r = np.linalg.norm(delta)
            x = np.exp(-alpha * (r - r0))
            energy += d_eV * ((1 - x) ** 2 - 1)
            force = -2 * d_eV * alpha * x * (1 - x) * delta / r
            forces[i] += force
            forces[j] -= force
    return energy, forces


def molecules(count: int, seed: int):
    """Distorted water (3 atoms) and water with an extra H (4 atoms), alternating."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [0.3, -0.5, 0.8]])
    data = []
    for k in range(count):
        elements = ["O", "H", "H", "H"][:3 + k % 2]
        positions = base[:len(elements)] + rng.normal(0, 0.08, (len(elements), 3))
        data.append((elements, positions) + morse(elements, positions))
    return data


def write_extxyz(path: Path, data) -> None:
    lines = []
    for elements, positions, energy, forces in data:
        lines += [str(len(elements)),
                  f'energy={float(energy)!r} pbc="F F F" Properties=species:S:1:pos:R:3:forces:R:3']
        lines += [" ".join([e] + [repr(float(v)) for v in (*p, *f)])
                  for e, p, f in zip(elements, positions, forces)]
    path.write_text("\n".join(lines) + "\n")


def train_config(tmp_path: Path, model: dict, dataset: str, epochs: int, **training) -> Path:
    config = {"dataset": dataset, "model": model, "output": str(tmp_path / "model"),
              "training": {"epochs": epochs, "batch_size": 4, "learning_rate": 5e-3, "patience": 100,
                           "seed": 1, "validation_fraction": 0.2, "test_fraction": 0.2, **training}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


SCHNET = {"architecture": "schnet", "features": 8, "interactions": 2, "radial_functions": 8,
          "cutoff_A": 3.0}


def test_train_evaluate_and_run_md(tmp_path, capsys):
    write_extxyz(tmp_path / "molecules.extxyz", molecules(20, seed=0))
    config = train_config(tmp_path, SCHNET, "molecules.extxyz", epochs=25)
    assert main(["train", str(config)]) == 0

    model_dir = tmp_path / "model"
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["split"] == "test"
    assert metrics["structures"] == {"train": 12, "validation": 4, "test": 4}
    for key in ("energy_mae_meV_per_atom", "force_mae_meV_per_A", "force_rmse_meV_per_A",
                "training_time_s"):
        assert np.isfinite(metrics[key])
        assert metrics[key] > 0
    assert load_model(model_dir).description.training["epochs_run"] == 25
    losses = [epoch["train_loss"] for epoch in metrics["history"]]
    assert losses[-1] < 0.5 * losses[0]
    assert min(e["validation_loss"] for e in metrics["history"]) < metrics["history"][0]["validation_loss"]

    capsys.readouterr()
    assert main(["evaluate", str(model_dir), str(tmp_path / "molecules.extxyz"),
                 "--plot", str(tmp_path / "parity.png")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["structures"] == 20
    assert evaluated["atoms"] == 70
    assert (tmp_path / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    run_molecule(tmp_path, model_dir)


def run_molecule(tmp_path: Path, model_dir: Path) -> None:
    """A few NVE steps of one molecule with the trained model, through the engine."""
    elements, positions, _, _ = molecules(1, seed=9)[0]
    lines = [str(len(elements)), "Properties=species:S:1:pos:R:3"]
    lines += [f"{e} {x!r} {y!r} {z!r}" for e, (x, y, z) in zip(elements, positions.tolist())]
    (tmp_path / "molecule.extxyz").write_text("\n".join(lines) + "\n")
    spec = {"system": {"structure": "molecule.extxyz", "periodic": False},
            "potential": {"kind": "learned", "model": str(model_dir)},
            "integrator": {"ensemble": "nve", "timestep_fs": 0.25},
            "velocities": {"source": "maxwell_boltzmann", "temperature_K": 300.0},
            "run": {"steps": 20}, "output": {"directory": str(tmp_path / "run"), "frame_stride": 10,
                                             "thermo_stride": 5, "checkpoint": None},
            "precision": "float32", "seed": 3}
    simulation = Simulation(InputSpec.model_validate(spec), tmp_path)
    stats = execute(simulation, tmp_path / "run")
    assert stats.steps == 20
    rows = (tmp_path / "run" / "thermo.csv").read_text().splitlines()
    assert len(rows) == 1 + 5   # header, step 0 and every 5 steps
    assert "nan" not in " ".join(rows).lower()


def periodic_npz(path: Path, count: int, seed: int) -> None:
    """Boxes of two water-like molecules (6 atoms) in a 6.5 Å cell, as .npz with atomic numbers."""
    rng = np.random.default_rng(seed)
    cell = np.eye(3) * 6.5
    base = np.array([[1, 1, 1], [1.96, 1, 1], [0.76, 1.93, 1],
                     [4, 4, 4], [4.96, 4, 4], [3.76, 4.93, 4.0]])
    elements = ["O", "H", "H", "O", "H", "H"]
    positions = base + rng.normal(0, 0.08, (count, 6, 3))
    labels = [morse(elements, p, cell) for p in positions]
    np.savez(path, numbers=np.array([8, 1, 1, 8, 1, 1]), positions=positions,
             energy=np.array([e for e, _ in labels]), forces=np.array([f for _, f in labels]),
             cell=cell)


def test_equivariant_periodic_npz_training(tmp_path):
    periodic_npz(tmp_path / "boxes.npz", 10, seed=1)
    model = {"architecture": "equivariant", "features": 4, "max_degree": 1, "interactions": 2,
             "radial_functions": 4, "cutoff_A": 3.0}
    config = train_config(tmp_path, model, "boxes.npz", epochs=6, batch_size=3, learning_rate=1e-2)
    assert main(["train", str(config)]) == 0
    history = json.loads((tmp_path / "model" / "metrics.json").read_text())["history"]
    assert len(history) == 6
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    loaded = load_model(tmp_path / "model")
    assert loaded.species == ["H", "O"]
    assert loaded.description.model.max_degree == 1


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def test_batched_predictions_match_engine(tmp_path, x64):
    """Energies and forces of structures of different sizes batched together with
    padding equal the engine's single-point results for each structure."""
    spec = EquivariantSpec(architecture="equivariant", features=4, max_degree=1, interactions=2,
                           radial_functions=4, cutoff_A=3.0)
    model = new_model(spec, ["H", "O"], [-1.0, -2.0], [2.0, 3.0], seed=2)
    save_model(tmp_path / "model", model)
    periodic_npz(tmp_path / "boxes.npz", 2, seed=3)
    structures = read_dataset(tmp_path / "boxes.npz")
    write_extxyz(tmp_path / "molecules.extxyz", molecules(3, seed=4))
    structures += read_dataset(tmp_path / "molecules.extxyz")

    graphs = make_graphs(structures, model.species, model.cutoff_A)
    capacity = batch_capacity(graphs, 4)
    batch = next(iterate_batches(graphs, 4, capacity))
    assert batch.atom_mask.sum() == 6 + 6 + 3 + 4
    assert len(batch.species) == capacity[0]
    shift, scale = model.shift_scale(jnp.float64)
    energies, forces = jax.jit(make_predict_fn(model.module, model.cutoff_A))(
        model.params, shift, scale, batch)

    offsets = np.cumsum([0] + [s.n_atoms for s in structures[:4]])
    for index in (0, 3):   # a periodic box first in the batch, a free molecule last
        structure = structures[index]
        energy, engine_forces = single_point(tmp_path, structure)
        assert energies[index] == pytest.approx(energy, rel=1e-12)
        batch_forces = np.asarray(forces[offsets[index]:offsets[index] + structure.n_atoms])
        np.testing.assert_allclose(batch_forces, engine_forces, atol=1e-10)


def single_point(tmp_path: Path, structure):
    """The engine's float64 energy and forces for a dataset structure with tmp_path/model."""
    header = "Properties=species:S:1:pos:R:3"
    if structure.cell is not None:
        header = 'Lattice="' + " ".join(map(repr, structure.cell.ravel().tolist())) + '" ' + header
    lines = [str(structure.n_atoms), header]
    lines += [f"{e} {x!r} {y!r} {z!r}" for e, (x, y, z) in zip(structure.elements,
                                                               structure.positions.tolist())]
    (tmp_path / "one.extxyz").write_text("\n".join(lines) + "\n")
    spec = {"system": {"structure": "one.extxyz", "periodic": structure.cell is not None},
            "potential": {"kind": "learned", "model": "model"},
            "integrator": {"ensemble": "nve", "timestep_fs": 0.5}, "velocities": {"source": "zero"},
            "neighbor": {"skin_A": 0.2}, "run": {"steps": 0}, "precision": "float64"}
    return Simulation(InputSpec.model_validate(spec), tmp_path).single_point()


def test_shift_least_squares_fit(tmp_path):
    data = molecules(10, seed=5)
    write_extxyz(tmp_path / "m.extxyz", [(e, p, -3.0 * e.count("H") - 7.5, f) for e, p, _, f in data])
    structures = read_dataset(tmp_path / "m.extxyz")
    shift, scale = fit_shift_scale(structures, ["H", "O"])
    np.testing.assert_allclose(shift, [-3.0, -7.5], atol=1e-12)
    forces_h = np.concatenate([s.forces[[e == "H" for e in s.elements]] for s in structures])
    assert scale[0] == pytest.approx(np.sqrt(np.mean(forces_h**2)))


def test_split_is_seeded(tmp_path):
    write_extxyz(tmp_path / "m.extxyz", molecules(10, seed=5))
    structures = read_dataset(tmp_path / "m.extxyz")
    first = split_dataset(structures, 0.2, 0.2, seed=3)
    again = split_dataset(structures, 0.2, 0.2, seed=3)
    assert [len(part) for part in first] == [6, 2, 2]
    assert all(a is b for x, y in zip(first, again) for a, b in zip(x, y))


@pytest.mark.parametrize("change, message", [
    ({"model": {"architecture": "mace"}}, "model"),
    ({"training": {"epoch": 3}}, "training.epoch: unknown key"),
    ({"training": {"test_fraction": 1.5}}, "training.test_fraction"),
])
def test_bad_training_config_errors(tmp_path, change, message):
    config = {"dataset": "d.extxyz", "model": dict(SCHNET), "output": "out", **change}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match=message):
        load_train_config(path)


def test_dataset_errors_name_the_file(tmp_path):
    np.savez(tmp_path / "bad.npz", positions=np.zeros((2, 3, 3)), energy=np.zeros(2))
    with pytest.raises(InputError, match=r"bad.npz: missing array 'forces'"):
        read_dataset(tmp_path / "bad.npz")
    (tmp_path / "plain.extxyz").write_text("1\nProperties=species:S:1:pos:R:3\nH 0 0 0\n")
    with pytest.raises(InputError, match=r"plain.extxyz: frame 1: needs energy="):
        read_dataset(tmp_path / "plain.extxyz")
