"""Learned potentials (SchNet and the e3x equivariant network) as the engine uses them.

The models here are untrained: seeded random parameters with a per-species
energy shift and scale, written to a model directory in ``tmp_path`` and
loaded through ``potential: {kind: learned, model: DIR}``. Physics checks
need no training: forces must be −∇E, the energy must not change under
rigid motions, permutations of like atoms or lattice translations, and
neighbor-list padding must contribute nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_md import partition, space

from mdengine.config import InputError, InputSpec
from mdengine.learned.equivariant import EquivariantSpec
from mdengine.learned.model_io import load_model, new_model, save_model
from mdengine.learned.schnet import SchNetSpec
from mdengine.simulation import Simulation

REPO = Path(__file__).resolve().parents[1]
CUTOFF_A = 3.0
SPECS = {
    "schnet": SchNetSpec(architecture="schnet", features=8, interactions=2, radial_functions=8,
                         cutoff_A=CUTOFF_A),
    "equivariant": EquivariantSpec(architecture="equivariant", features=8, max_degree=2,
                                   interactions=2, radial_functions=6, cutoff_A=CUTOFF_A),
}
ARCHITECTURES = list(SPECS)
SPECIES = ["H", "O"]
SHIFT_EV = [-13.5, -432.25]
# Large scales make the untrained forces large enough (≫ 1e-3 eV/Å) to test.
SCALE_EV = [3.0, 5.0]
BOX_A = 6.6   # half of it exceeds the 3.0 Å cutoff plus the 0.2 Å skin

STEP_A = 1e-4
RELATIVE_TOLERANCE = 1e-6
ABSOLUTE_TOLERANCE_EV_A = 1e-8


def write_model(directory: Path, architecture: str, seed: int = 0) -> Path:
    model = new_model(SPECS[architecture], SPECIES, SHIFT_EV, SCALE_EV, seed=seed)
    return save_model(directory, model)


def water_box(seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Eight water-like molecules (O–H 0.96 Å, H–O–H near 104.5°) in a cubic box, Å."""
    rng = np.random.default_rng(seed)
    elements, positions = [], []
    for corner in np.array([(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]):
        oxygen = (corner + 0.25) * BOX_A / 2 + rng.uniform(-0.3, 0.3, 3)
        axis, other = np.linalg.qr(rng.normal(size=(3, 3)))[0][:, :2].T
        half = np.radians(104.5 / 2) + rng.uniform(-0.1, 0.1)
        for sign in (1, -1):
            direction = np.cos(half) * axis + sign * np.sin(half) * other
            positions.append(oxygen + 0.96 * direction)
        positions.append(oxygen)
        elements += ["H", "H", "O"]
    return elements, np.array(positions)


def write_extxyz(path: Path, elements, positions, cell=None) -> None:
    header = "Properties=species:S:1:pos:R:3"
    if cell is not None:
        header = 'Lattice="' + " ".join(repr(float(v)) for v in np.ravel(cell)) + '" ' + header
    lines = [str(len(elements)), header]
    lines += [f"{e} {float(x)!r} {float(y)!r} {float(z)!r}" for e, (x, y, z) in zip(elements, positions)]
    path.write_text("\n".join(lines) + "\n")


def build(tmp_path: Path, elements, positions, periodic: bool, model: str = "model",
          capacity_multiplier: float = 1.25) -> Simulation:
    """A float64 single-point simulation of the structure with the model in tmp_path/model."""
    cell = np.eye(3) * BOX_A if periodic else None
    write_extxyz(tmp_path / "structure.extxyz", elements, positions, cell)
    spec = {
        "system": {"structure": "structure.extxyz", "periodic": periodic},
        "potential": {"kind": "learned", "model": model},
        "integrator": {"ensemble": "nve", "timestep_fs": 0.5},
        "velocities": {"source": "zero"},
        "neighbor": {"skin_A": 0.2, "capacity_multiplier": capacity_multiplier},
        "run": {"steps": 0},
        "precision": "float64",
    }
    return Simulation(InputSpec.model_validate(spec), base_dir=tmp_path)


def finite_difference_forces(simulation: Simulation, atoms) -> np.ndarray:
    """Forces (eV/Å) on ``atoms`` by fourth-order central differences of the engine's energy."""
    cartesian = np.asarray(simulation.system.positions, dtype=np.float64)
    cell = simulation.system.cell

    def coordinates(moved):
        return jnp.asarray(moved if cell is None else np.linalg.solve(cell.T, moved.T).T)

    neighbor = simulation.neighbors.allocate(coordinates(cartesian))
    energy = jax.jit(lambda c: simulation.energy_and_force(c, neighbor)[0])
    forces = np.zeros((len(atoms), 3))
    for row, atom in enumerate(atoms):
        for axis in range(3):
            values = {}
            for k in (-2, -1, 1, 2):
                moved = cartesian.copy()
                moved[atom, axis] += k * STEP_A
                values[k] = float(energy(coordinates(moved)))
            forces[row, axis] = -(values[-2] - 8 * values[-1] + 8 * values[1] - values[2]) / (12 * STEP_A)
    return forces


# ---------------------------------------------------------------- forces


@pytest.mark.parametrize("periodic", [True, False], ids=["periodic", "free"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_forces_are_minus_energy_gradient(tmp_path, architecture, periodic):
    write_model(tmp_path / "model", architecture)
    elements, positions = water_box()
    simulation = build(tmp_path, elements, positions, periodic)
    _, forces = simulation.single_point()
    atoms = [0, 2, 7, 23]
    expected = finite_difference_forces(simulation, atoms)
    actual = forces[atoms]
    assert np.abs(expected).max() > 1e-2, "forces too small to test"
    tolerance = np.maximum(RELATIVE_TOLERANCE * np.abs(expected), ABSOLUTE_TOLERANCE_EV_A)
    assert np.all(np.abs(actual - expected) <= tolerance), (actual, expected)


# ---------------------------------------------------------------- symmetries


def model_energy_fn(model_dir: Path, displacement_fn):
    """Jitted ``(species, positions, idx) -> (energy eV, forces)`` straight from the model API."""
    model = load_model(model_dir)
    atomic = model.atomic_energy_fn(displacement_fn, jnp.float64)

    def energy(species, positions, idx):
        return jnp.sum(atomic(species, positions, idx))

    value_and_grad = jax.jit(jax.value_and_grad(energy, argnums=1))

    def energy_and_forces(species, positions, idx):
        e, g = value_and_grad(jnp.asarray(species, jnp.int32), positions, idx)
        return float(e), np.asarray(-g)

    return energy_and_forces


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_free_space_invariance_and_equivariance(tmp_path, architecture, x64):
    write_model(tmp_path / "model", architecture)
    displacement_fn, _ = space.free()
    energy_and_forces = model_energy_fn(tmp_path / "model", displacement_fn)
    elements, positions = water_box(seed=1)
    species = np.array([SPECIES.index(e) for e in elements])
    positions = jnp.asarray(positions)
    neighbor_fn = partition.neighbor_list(displacement_fn, 1.0, CUTOFF_A, capacity_multiplier=2.0,
                                          format=partition.Sparse, disable_cell_list=True)
    neighbor = neighbor_fn.allocate(positions)

    def evaluate(species, moved):
        updated = neighbor.update(jnp.asarray(moved))
        assert not updated.did_buffer_overflow
        return energy_and_forces(species, jnp.asarray(moved), updated.idx)

    energy, forces = evaluate(species, positions)
    assert np.abs(forces).max() > 1e-2
    tolerance = 1e-10 * abs(energy)

    rotation = random_rotation(5)
    centre = positions.mean(axis=0)
    rotated = (positions - centre) @ rotation.T + centre
    e_rot, f_rot = evaluate(species, rotated)
    assert abs(e_rot - energy) < tolerance
    np.testing.assert_allclose(f_rot, forces @ rotation.T, atol=1e-10)

    mirrored = positions * np.array([-1.0, 1.0, 1.0])
    e_mirror, f_mirror = evaluate(species, mirrored)
    assert abs(e_mirror - energy) < tolerance
    np.testing.assert_allclose(f_mirror, forces * np.array([-1.0, 1.0, 1.0]), atol=1e-10)

    e_moved, f_moved = evaluate(species, positions + jnp.array([3.7, -12.1, 0.4]))
    assert abs(e_moved - energy) < tolerance
    np.testing.assert_allclose(f_moved, forces, atol=1e-10)

    order = np.random.default_rng(2).permutation(len(species))
    e_perm, f_perm = evaluate(species[order], positions[order])
    assert abs(e_perm - energy) < tolerance
    np.testing.assert_allclose(f_perm, forces[order], atol=1e-10)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_lattice_vector_wrap_invariance(tmp_path, architecture, x64):
    write_model(tmp_path / "model", architecture)
    box = jnp.eye(3) * BOX_A
    displacement_fn, _ = space.periodic_general(box, fractional_coordinates=True)
    energy_and_forces = model_energy_fn(tmp_path / "model", displacement_fn)
    elements, positions = water_box(seed=2)
    species = np.array([SPECIES.index(e) for e in elements])
    fractional = jnp.asarray(np.mod(positions / BOX_A, 1.0))
    neighbor_fn = partition.neighbor_list(displacement_fn, box, CUTOFF_A, capacity_multiplier=2.0,
                                          format=partition.Sparse, fractional_coordinates=True,
                                          disable_cell_list=True)
    neighbor = neighbor_fn.allocate(fractional)
    energy, forces = energy_and_forces(species, fractional, neighbor.idx)

    # Atom 4 moves by −a + b (fractional −1 along x, +1 along y): the same periodic structure.
    wrapped = fractional.at[4].add(jnp.array([-1.0, 1.0, 0.0]))
    e_wrapped, f_wrapped = energy_and_forces(species, wrapped, neighbor.idx)
    assert abs(e_wrapped - energy) <= 1e-12 * abs(energy)
    np.testing.assert_allclose(f_wrapped, forces, atol=1e-11)
    assert np.abs(forces).max() > 1e-2


# ---------------------------------------------------------------- padding and edge cases


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_neighbor_padding_contributes_nothing(tmp_path, architecture):
    write_model(tmp_path / "model", architecture)
    elements, positions = water_box(seed=3)
    tight = build(tmp_path, elements, positions, True, capacity_multiplier=1.0)
    roomy = build(tmp_path, elements, positions, True, capacity_multiplier=3.0)
    tight_capacity = tight.neighbors.allocate(tight._initial_coordinates).idx.shape[1]
    roomy_capacity = roomy.neighbors.allocate(roomy._initial_coordinates).idx.shape[1]
    assert roomy_capacity > 2 * tight_capacity
    e_tight, f_tight = tight.single_point()
    e_roomy, f_roomy = roomy.single_point()
    assert abs(e_tight - e_roomy) <= 1e-12 * abs(e_tight)
    np.testing.assert_allclose(f_roomy, f_tight, rtol=1e-12, atol=1e-12 * np.abs(f_tight).max())


def replicated_water32(repeats: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``inputs/data/water32.extxyz`` (96 atoms, 9.865 Å cube) replicated n × n × n."""
    import ase.io
    atoms = ase.io.read(REPO / "inputs" / "data" / "water32.extxyz") * (repeats, repeats, repeats)
    return atoms.get_chemical_symbols(), atoms.positions, np.asarray(atoms.cell[:])


@pytest.mark.parametrize("case", ["small periodic", "small free", "one block free", "cell list"])
def test_schnet_dense_rows_equal_sparse_edges(tmp_path, case):
    # The engine runs SchNet on a dense list and sums messages along its rows,
    # in blocks of 16 atoms (one unpadded block below that), with a gradient
    # built from the rows. The model API on a sparse list uses segment sums
    # instead. Both are float64 sums of the same terms in another order, so
    # they agree to 1e-12 relative.
    write_model(tmp_path / "model", "schnet")
    periodic = case not in ("small free", "one block free")
    if case == "cell list":
        elements, positions, cell = replicated_water32(2)
        write_extxyz(tmp_path / "structure.extxyz", elements, positions, cell)
        spec = {"system": {"structure": "structure.extxyz"},
                "potential": {"kind": "learned", "model": "model"},
                "integrator": {"ensemble": "nve", "timestep_fs": 0.5}, "velocities": {"source": "zero"},
                "neighbor": {"skin_A": 0.2}, "run": {"steps": 0}, "precision": "float64"}
        simulation = Simulation(InputSpec.model_validate(spec), base_dir=tmp_path)
        assert simulation.neighbors.uses_cell_list
    else:
        elements, positions = water_box(seed=4)
        if case == "one block free":
            elements, positions = elements[:12], positions[:12]
        cell = np.eye(3) * BOX_A
        simulation = build(tmp_path, elements, positions, periodic)
    assert simulation.potential.neighbor_format is partition.Dense
    energy, forces = simulation.single_point()

    coordinates = simulation._initial_coordinates
    sparse = partition.neighbor_list(
        simulation.neighbors.metric, cell.T if periodic else 1.0, CUTOFF_A + 0.2,
        fractional_coordinates=periodic, format=partition.Sparse, disable_cell_list=True)
    idx = sparse.allocate(coordinates).idx
    model = load_model(tmp_path / "model")
    atomic = model.atomic_energy_fn(simulation.displacement_fn, jnp.float64,
                                    tabulate_filters=True)
    species = jnp.asarray([SPECIES.index(e) for e in elements], jnp.int32)
    expected_energy, gradient = jax.jit(jax.value_and_grad(
        lambda r: jnp.sum(atomic(species, r, idx))))(coordinates)
    # Gradients in fractional coordinates come out Cartesian (jax-md's periodic_general).
    expected_forces = -np.asarray(gradient)
    assert energy == pytest.approx(float(expected_energy), rel=1e-12)
    np.testing.assert_allclose(forces, expected_forces, rtol=0, atol=1e-12 * np.abs(expected_forces).max())


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def debug_nans():
    previous = jax.config.jax_debug_nans
    jax.config.update("jax_debug_nans", True)
    yield
    jax.config.update("jax_debug_nans", previous)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_lone_atom_energy_is_shift(tmp_path, architecture, debug_nans):
    write_model(tmp_path / "model", architecture)
    simulation = build(tmp_path, ["O"], np.array([[0.3, -0.2, 1.1]]), periodic=False)
    energy, forces = simulation.single_point()
    assert energy == pytest.approx(SHIFT_EV[1], rel=1e-14)
    assert np.all(forces == 0.0)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_atoms_beyond_cutoff_give_no_nan(tmp_path, architecture, debug_nans):
    write_model(tmp_path / "model", architecture)
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, CUTOFF_A + 0.1]])
    simulation = build(tmp_path, ["H", "O"], positions, periodic=False)
    energy, forces = simulation.single_point()
    assert energy == pytest.approx(SHIFT_EV[0] + SHIFT_EV[1], rel=1e-14)
    assert np.all(forces == 0.0)


# ---------------------------------------------------------------- model directories


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_model_directory_round_trip(tmp_path, architecture, x64):
    original = new_model(SPECS[architecture], SPECIES, SHIFT_EV, SCALE_EV, seed=4)
    save_model(tmp_path / "model", original)
    loaded = load_model(tmp_path / "model")
    assert loaded.description == original.description
    for a, b in zip(jax.tree_util.tree_leaves(original.params), jax.tree_util.tree_leaves(loaded.params)):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        assert np.array_equal(np.asarray(a), np.asarray(b))

    displacement_fn, _ = space.free()
    elements, positions = water_box(seed=4)
    species = jnp.asarray([SPECIES.index(e) for e in elements], jnp.int32)
    neighbor_fn = partition.neighbor_list(displacement_fn, 1.0, CUTOFF_A, format=partition.Sparse,
                                          disable_cell_list=True)
    idx = neighbor_fn.allocate(jnp.asarray(positions)).idx
    before = original.atomic_energy_fn(displacement_fn, jnp.float64)(species, jnp.asarray(positions), idx)
    after = loaded.atomic_energy_fn(displacement_fn, jnp.float64)(species, jnp.asarray(positions), idx)
    assert np.array_equal(np.asarray(before), np.asarray(after))


def edit_json(model_dir: Path, change) -> None:
    path = model_dir / "model.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def wrong_features(data):
    data["model"]["features"] = 12


BAD_DIRECTORIES = {
    "missing": (lambda d: shutil.rmtree(d), "model directory not found"),
    "no json": (lambda d: (d / "model.json").unlink(), "no model.json"),
    "malformed json": (lambda d: (d / "model.json").write_text('{"format": '),
                       "malformed JSON at line 1"),
    "unknown architecture": (lambda d: edit_json(d, lambda m: m["model"].update(architecture="mace")),
                             "unknown architecture 'mace'; known: schnet, equivariant"),
    "wrong unit": (lambda d: edit_json(d, lambda m: m.update(energy_unit="kcal/mol")),
                   "energy_unit"),
    "missing shift": (lambda d: edit_json(d, lambda m: m["energy_shift_eV"].pop("O")),
                      "energy_shift_eV must have one entry per species"),
    "no params": (lambda d: shutil.rmtree(d / "params"), "no params/ folder"),
    "shape mismatch": (lambda d: edit_json(d, wrong_features),
                       "parameters do not match schnet with 2 species"),
}


@pytest.mark.parametrize("case", list(BAD_DIRECTORIES))
def test_bad_model_directory_errors(tmp_path, case):
    model_dir = write_model(tmp_path / "model", "schnet")
    damage, message = BAD_DIRECTORIES[case]
    damage(model_dir)
    elements, positions = water_box()
    with pytest.raises(InputError) as caught:
        build(tmp_path, elements, positions, periodic=True)
    text = str(caught.value)
    assert message in text
    assert str(model_dir) in text
    assert "\n" not in text


def test_missing_elements_are_named(tmp_path):
    write_model(tmp_path / "model", "schnet")
    elements, positions = water_box()
    elements[2], elements[5] = "C", "N"
    with pytest.raises(InputError, match=r"has no C, N, which .*structure.extxyz contains"):
        build(tmp_path, elements, positions, periodic=True)
