"""``mdengine import``: schnetpack SchNet models must give schnetpack's energies and forces.

Two levels:

- Without torch: ``tests/data/schnetpack_schnet_small.npz`` is a neutral
  export of a small random schnetpack 2.0.4 model (8 features, 12 filters,
  2 shared interactions, 6 Gaussians, 5 Å cosine cutoff, shifted-softplus
  readout, per-atom mean and atom references). It stores schnetpack's float64
  energies and forces on inputs/data/ethanol.xyz and inputs/data/water32.extxyz.
  It was written with::

      PY=tools/peers/.venv/bin/python
      $PY tools/peers/export_schnetpack.py random small.pt --features 8 --interactions 2 \\
          --gaussians 6 --cutoff 5 --filters 12 --shared --max-z 10 \\
          --readout-activation shifted_softplus --mean -1.5 \\
          --atomref 1=-13.6 6=-1030.0 8=-2040.0 --seed 3
      $PY tools/peers/export_schnetpack.py export small.pt \\
          --output tests/data/schnetpack_schnet_small.npz \\
          --reference inputs/data/ethanol.xyz inputs/data/water32.extxyz

- With the peer environment (``tools/peers/.venv``, or the interpreter named
  by ``MDENGINE_PEER_PYTHON``) that imports schnetpack: a random 128-feature
  model is built, saved, exported and imported, and schnetpack's own
  energies and forces (computed in a subprocess) are compared with mdengine's.

Relative errors: |ΔE| / |E| for energies and max |ΔF| / max |F| over all
components for forces.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import ase.io
import jax
import numpy as np
import pytest

from mdengine.cli import main
from mdengine.config import InputSpec
from mdengine.learned import schnetpack_format
from mdengine.learned.data import Structure
from mdengine.learned.import_schnetpack import predict, reference_structures
from mdengine.learned.model_io import load_model
from mdengine.simulation import Simulation

REPO = Path(__file__).resolve().parents[1]
SMALL_EXPORT = REPO / "tests" / "data" / "schnetpack_schnet_small.npz"
EXPORTER = REPO / "tools" / "peers" / "export_schnetpack.py"
STRUCTURES = [REPO / "inputs" / "data" / "ethanol.xyz", REPO / "inputs" / "data" / "water32.extxyz"]
TOLERANCE = {"float64": 1e-5, "float32": 1e-4}


def relative_errors(energy, forces, ref_energy, ref_forces) -> tuple[float, float]:
    energy_error = abs(float(energy) - float(ref_energy)) / abs(float(ref_energy))
    force_error = float(np.max(np.abs(np.asarray(forces) - ref_forces)) / np.max(np.abs(ref_forces)))
    return energy_error, force_error


def import_cli(source: Path, output: Path, *options: str) -> int:
    return main(["import", str(source), "--output", str(output), *options])


# ---------------------------------------------------------------- committed export, no torch


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    output = tmp_path_factory.mktemp("imported") / "small"
    assert import_cli(SMALL_EXPORT, output, "--species", "H,C,O") == 0
    return load_model(output)


def test_small_export_spec_describes_schnetpack(small_model):
    spec = small_model.description.model
    assert spec.features == 8
    assert spec.filters == 12
    assert spec.interactions == 2
    assert spec.update_bias
    assert not spec.isolated_atom_reference
    assert spec.readout_activation == "shifted_softplus"
    assert small_model.species == ["H", "C", "O"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_small_export_matches_references(small_model, dtype):
    _, _, references = schnetpack_format.read_export(SMALL_EXPORT)
    structures = reference_structures(references, 1.0, 1.0)
    energies, forces = predict(small_model, structures, dtype)
    for structure, energy, force in zip(structures, energies, forces):
        energy_error, force_error = relative_errors(energy, force, structure.energy, structure.forces)
        assert energy_error < TOLERANCE[dtype], (structure.n_atoms, energy, structure.energy)
        assert force_error < TOLERANCE[dtype], (structure.n_atoms, force_error)


def test_shared_interactions_copied_into_every_block(small_model):
    first, second = small_model.params["interaction_0"], small_model.params["interaction_1"]
    for layer in first:
        for name in first[layer]:
            np.testing.assert_array_equal(first[layer][name], second[layer][name])


def engine_single_point(tmp_path: Path, model_dir: Path, structure: Path, repeats=None):
    """Energy (eV) and forces (eV/Å) of the structure through the engine's neighbor list, float64."""
    periodic = repeats is not None
    system = {"structure": str(structure), "periodic": periodic}
    spec = {
        "system": system,
        "potential": {"kind": "learned", "model": str(model_dir)},
        "integrator": {"ensemble": "nve", "timestep_fs": 0.5},
        "velocities": {"source": "zero"},
        "neighbor": {"skin_A": 0.5},
        "run": {"steps": 0},
        "precision": "float64",
    }
    if periodic:
        atoms = ase.io.read(structure).repeat(repeats)
        path = tmp_path / "replicated.extxyz"
        ase.io.write(path, atoms, format="extxyz")
        system["structure"] = str(path)
    simulation = Simulation(InputSpec.model_validate(spec), base_dir=tmp_path)
    energy, forces = simulation.single_point()
    return float(energy), np.asarray(forces)


def test_engine_run_matches_ethanol_reference(tmp_path, small_model):
    jax.config.update("jax_enable_x64", True)
    _, _, references = schnetpack_format.read_export(SMALL_EXPORT)
    energy, forces = engine_single_point(tmp_path, small_model.path, STRUCTURES[0])
    energy_error, force_error = relative_errors(energy, forces, references[0]["energy"],
                                                references[0]["forces"])
    assert energy_error < 1e-5
    assert force_error < 1e-5


def test_engine_run_matches_replicated_water_reference(tmp_path, small_model):
    """The 9.865 Å water cell is shorter than twice the 5 Å cutoff, so the engine runs
    its 2×2×2 replica: 8 times the energy, the same forces on every copy."""
    jax.config.update("jax_enable_x64", True)
    _, _, references = schnetpack_format.read_export(SMALL_EXPORT)
    energy, forces = engine_single_point(tmp_path, small_model.path, STRUCTURES[1], (2, 2, 2))
    expected_forces = np.tile(references[1]["forces"], (8, 1))
    energy_error, force_error = relative_errors(energy, forces, 8 * references[1]["energy"],
                                                expected_forces)
    assert energy_error < 1e-5
    assert force_error < 1e-5


def test_units_convert_energies_and_forces(tmp_path, small_model):
    """A model trained in kcal/mol and Bohr gives E·0.0434 eV and F·0.0434/0.529 eV/Å."""
    output = tmp_path / "converted"
    assert import_cli(SMALL_EXPORT, output, "--species", "H,C,O", "--energy-unit", "kcal/mol",
                      "--length-unit", "Bohr") == 0
    converted = load_model(output)
    _, _, references = schnetpack_format.read_export(SMALL_EXPORT)
    bohr = reference_structures(references[:1], 1.0, 0.529177210903)
    energies, forces = predict(converted, bohr, "float64")
    expected_energies, expected_forces = predict(small_model, reference_structures(references[:1], 1.0, 1.0))
    energy_error, force_error = relative_errors(energies[0], forces[0],
                                                0.0433641043 * expected_energies[0],
                                                expected_forces[0] * 0.0433641043 / 0.529177210903)
    assert energy_error < 1e-12
    assert force_error < 1e-12


def test_default_species_cover_embedding_table(tmp_path):
    assert import_cli(SMALL_EXPORT, tmp_path / "all") == 0
    assert load_model(tmp_path / "all").species == ["H", "He", "Li", "Be", "B", "C", "N", "O", "F"]


# ---------------------------------------------------------------- errors


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def only_error_line(capsys) -> str:
    """Return the single ``error:`` line on stderr, asserting there is exactly one."""
    lines = error_lines(capsys)
    assert len(lines) == 1
    return lines[0]


def test_not_an_export_is_rejected(tmp_path, capsys):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    assert import_cli(path, tmp_path / "out") == 2
    line = only_error_line(capsys)
    assert str(path) in line
    assert "not a neutral schnetpack export" in line


def test_torch_file_without_torch_is_rejected(tmp_path, capsys):
    try:
        import torch  # noqa: F401
        pytest.skip("torch is importable here, so the file would be read directly")
    except ImportError:
        pass
    path = tmp_path / "model.pt"
    path.write_bytes(b"not really a torch file")
    assert import_cli(path, tmp_path / "out") == 2
    line = only_error_line(capsys)
    assert str(path) in line
    assert "export_schnetpack.py" in line


def test_species_beyond_table_is_rejected(tmp_path, capsys):
    assert import_cli(SMALL_EXPORT, tmp_path / "out", "--species", "H,Cl") == 2
    lines = error_lines(capsys)
    assert len(lines) == 1
    assert "Cl" in lines[0]


def test_existing_model_needs_overwrite(tmp_path, capsys):
    output = tmp_path / "model"
    assert import_cli(SMALL_EXPORT, output, "--species", "H,C,O") == 0
    assert import_cli(SMALL_EXPORT, output, "--species", "H,C,O") == 2
    assert "--overwrite" in error_lines(capsys)[0]
    assert import_cli(SMALL_EXPORT, output, "--species", "H,C,O", "--overwrite") == 0


# ---------------------------------------------------------------- with schnetpack


def peer_python() -> Path | None:
    """The peer interpreter, if it exists and imports schnetpack through the exporter's fix."""
    candidate = Path(os.environ.get("MDENGINE_PEER_PYTHON",
                                    REPO / "tools" / "peers" / ".venv" / "bin" / "python"))
    if not candidate.exists():
        return None
    check = ("import sys; sys.path.insert(0, sys.argv[1]); import export_schnetpack as e; "
             "e.import_schnetpack()")
    result = subprocess.run([str(candidate), "-c", check, str(EXPORTER.parent)],
                            capture_output=True, text=True, timeout=300)
    return candidate if result.returncode == 0 else None


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    python = peer_python()
    if python is None:
        pytest.skip("no peer environment with schnetpack (tools/peers/.venv or "
                    "MDENGINE_PEER_PYTHON); run tools/peers/setup.sh")
    return python


def run_exporter(python: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), str(EXPORTER), *arguments], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def random_128(peer, tmp_path_factory):
    """A random schnetpack SchNet (128 features, 3 interactions, 20 Gaussians, 5 Å), imported."""
    folder = tmp_path_factory.mktemp("schnetpack")
    model_file = folder / "schnet.pt"
    for arguments in (("random", str(model_file), "--features", "128", "--interactions", "3",
                       "--gaussians", "20", "--cutoff", "5", "--seed", "11",
                       "--atomref", "1=-13.6", "6=-1030.0", "8=-2040.0"),
                      ("export", str(model_file), "--output", str(folder / "schnet.npz"))):
        result = run_exporter(peer, *arguments)
        assert result.returncode == 0, result.stderr
    assert import_cli(folder / "schnet.npz", folder / "model", "--species", "H,C,O") == 0
    return model_file, load_model(folder / "model")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_random_128_matches_schnetpack(peer, random_128, tmp_path, dtype):
    model_file, model = random_128
    output = tmp_path / "schnetpack.json"
    result = run_exporter(peer, "evaluate", str(model_file), "--dtype", dtype, "--json", str(output),
                          "--structures", *map(str, STRUCTURES))
    assert result.returncode == 0, result.stderr
    expected = json.loads(output.read_text())
    structures = []
    for path in STRUCTURES:
        atoms = ase.io.read(path)
        cell = np.asarray(atoms.cell[:]) if atoms.pbc.any() else None
        structures.append(Structure(atoms.get_chemical_symbols(), atoms.positions, 0.0,
                                    np.zeros((len(atoms), 3)), cell))
    energies, forces = predict(model, structures, dtype)
    for path, reference, energy, force in zip(STRUCTURES, expected, energies, forces):
        energy_error, force_error = relative_errors(energy, force, reference["energy"],
                                                    np.asarray(reference["forces"]))
        assert energy_error < TOLERANCE[dtype], (path.name, energy, reference["energy"])
        assert force_error < TOLERANCE[dtype], (path.name, force_error)


UNSUPPORTED = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
import export_schnetpack
spk = export_schnetpack.import_schnetpack()
radial = spk.nn.GaussianRBF(n_rbf=6, cutoff=5.0)
if sys.argv[3] == "painn":
    representation = spk.representation.PaiNN(
        n_atom_basis=8, n_interactions=1, radial_basis=radial, cutoff_fn=spk.nn.CosineCutoff(5.0))
else:
    representation = spk.representation.SchNet(
        n_atom_basis=8, n_interactions=1, radial_basis=radial,
        cutoff_fn=spk.nn.MollifierCutoff(5.0))
model = spk.model.NeuralNetworkPotential(
    representation=representation, input_modules=[spk.atomistic.PairwiseDistances()],
    output_modules=[spk.atomistic.Atomwise(n_in=8, output_key="energy"),
                    spk.atomistic.Forces(energy_key="energy", force_key="forces")])
torch.save(model, sys.argv[2])
"""


@pytest.mark.parametrize("kind, named", [("painn", "PaiNN"), ("mollifier", "MollifierCutoff")])
def test_unsupported_model_is_rejected(peer, tmp_path, kind, named):
    model_file = tmp_path / f"{kind}.pt"
    built = subprocess.run([str(peer), "-c", UNSUPPORTED, str(EXPORTER.parent), str(model_file), kind],
                          capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    result = run_exporter(peer, "export", str(model_file), "--output", str(tmp_path / "out.npz"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert str(model_file) in lines[0]
    assert named in lines[0]
    assert not (tmp_path / "out.npz").exists()
