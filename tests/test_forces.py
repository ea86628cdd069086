"""Forces equal −∇E: automatic-differentiation forces against central finite
differences of the energy, for every kind of potential, plus closed-form
pair energies and a triclinic cell.

Each system is built through the engine from an input dict (lattices or
extended-XYZ files written to ``tmp_path``). The energy is then evaluated on
coordinates in which one Cartesian component of one atom is moved by ±h,
with the neighbor list of the unperturbed configuration: h is far below half
the skin, so the list stays valid.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdengine.config import InputSpec
from mdengine.simulation import Simulation

REPO = Path(__file__).resolve().parents[1]
POTENTIALS = REPO / "inputs" / "potentials"
PLUGINS = REPO / "inputs" / "plugins"

STEP_A = 1e-4
# Forces come from the fourth-order central difference
#   F ≈ −[E(x − 2h) − 8 E(x − h) + 8 E(x + h) − E(x + 2h)] / (12 h),
# exact for quartics. Its truncation error, about h⁴ |E⁽⁵⁾| / 30, is negligible
# at h = 1e-4 Å, and its rounding error, about 1e-16 |E| / h, stays under
# 1e-9 eV/Å for these energies (|E| < 900 eV). The two-point difference is
# not enough for the copper EAM: its error h² |E'''| / 6 reached 7e-7 of the
# force (|E'''| ≈ 100 eV/Å³), while this stencil stays below 6e-8 for every
# system here (measured). Forces above 1e-3 eV/Å must then agree to 1e-6
# relative; smaller ones, where a relative bound is meaningless, to 1e-7 eV/Å.
RELATIVE_TOLERANCE = 1e-6
ABSOLUTE_TOLERANCE_EV_A = 1e-7
RELATIVE_ABOVE_EV_A = 1e-3

ARGON_LJ = {"kind": "lennard_jones", "cutoff_A": 8.5, "shift_energy": True,
            "species": {"Ar": {"epsilon_eV": 0.0104, "sigma_A": 3.40}}}

# Argon-like Morse: the depth, position and curvature of the Lennard-Jones
# well above, D = ε, r0 = 2^(1/6) σ, and 2 D α² = 72 ε / r0², so α = 6 / r0.
MORSE_R0_A = 2 ** (1 / 6) * 3.40
ARGON_MORSE = {"kind": "morse", "cutoff_A": 8.5, "shift_energy": True,
               "species": {"Ar": {"D_eV": 0.0104, "alpha_per_A": 6 / MORSE_R0_A,
                                  "r0_A": MORSE_R0_A}}}

# Buckingham fit to the same Lennard-Jones well (depth, position and
# curvature matched); the derivation is in inputs/custom_buckingham.yaml.
BUCKINGHAM = {"A_eV": 7687.0, "rho_A": 0.27711, "C_eV_A6": 56.938, "cutoff_A": 8.5}

# Krypton-like Lennard-Jones parameters, chosen to differ from argon's so
# that Lorentz–Berthelot mixing is distinguishable from other rules.
KRYPTON = {"epsilon_eV": 0.0140, "sigma_A": 3.65}


def lattice(kind, element, a_A, repeats, displacement_A) -> dict:
    return {"lattice": {"kind": kind, "element": element, "lattice_constant_A": a_A,
                        "repeats": list(repeats), "displacement_A": displacement_A}}


def build(tmp_path: Path, system: dict, potential: dict, skin_A: float = 0.5) -> Simulation:
    """Build a float64 simulation of ``system`` with ``potential``, resolving files from tmp_path."""
    spec = {
        "system": system,
        "potential": potential,
        "integrator": {"ensemble": "nve", "timestep_fs": 1},
        "velocities": {"source": "zero"},
        "neighbor": {"skin_A": skin_A},
        "run": {"steps": 0},
        "precision": "float64",
        "seed": 11,
    }
    return Simulation(InputSpec.model_validate(spec), base_dir=tmp_path)


def write_extxyz(path: Path, elements, positions, cell=None) -> None:
    """Write extended XYZ (Å). The rows of ``cell`` are the lattice vectors, or None for free space."""
    header = "Properties=species:S:1:pos:R:3"
    if cell is not None:
        values = " ".join(repr(float(v)) for v in np.asarray(cell).ravel())
        header = f'Lattice="{values}" ' + header
    lines = [str(len(positions)), header]
    for element, (x, y, z) in zip(elements, positions):
        lines.append(f"{element} {float(x)!r} {float(y)!r} {float(z)!r}")
    path.write_text("\n".join(lines) + "\n")


def fcc_positions(a_A: float, repeats: int, displacement_A: float, seed: int) -> np.ndarray:
    """Cartesian positions (Å) of a cubic fcc supercell, randomly displaced."""
    basis = np.array([(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)])
    cells = np.array([(i, j, k) for i in range(repeats) for j in range(repeats) for k in range(repeats)])
    positions = (cells[:, None, :] + basis[None, :, :]).reshape(-1, 3) * a_A
    rng = np.random.default_rng(seed)
    return positions + rng.uniform(-displacement_A, displacement_A, positions.shape)


def engine_coordinates(simulation: Simulation, cartesian: np.ndarray) -> jax.Array:
    """Cartesian Å to the engine's coordinates: fractional when periodic."""
    cell = simulation.system.cell
    if cell is None:
        return jnp.asarray(cartesian)
    return jnp.asarray(np.linalg.solve(cell.T, cartesian.T).T)


def finite_difference_forces(simulation: Simulation, atoms) -> np.ndarray:
    """``[len(atoms), 3]`` forces (eV/Å) by fourth-order central differences of the energy."""
    positions = np.asarray(simulation.system.positions, dtype=np.float64)
    neighbor = simulation.neighbors.allocate(engine_coordinates(simulation, positions))
    energy_fn = jax.jit(lambda coordinates: simulation.energy_and_force(coordinates, neighbor)[0])

    def moved_energy(atom, axis, offset_A):
        moved = positions.copy()
        moved[atom, axis] += offset_A
        return float(energy_fn(engine_coordinates(simulation, moved)))

    forces = np.zeros((len(atoms), 3))
    for row, atom in enumerate(atoms):
        for axis in range(3):
            e = {k: moved_energy(atom, axis, k * STEP_A) for k in (-2, -1, 1, 2)}
            forces[row, axis] = -(e[-2] - 8 * e[-1] + 8 * e[1] - e[2]) / (12 * STEP_A)
    return forces


def assert_forces_match(simulation: Simulation, n_atoms_checked: int = 5) -> None:
    """Compare the engine's forces on a few atoms with finite differences."""
    _, forces = simulation.single_point()
    rng = np.random.default_rng(3)
    atoms = np.sort(rng.choice(simulation.system.n_atoms, n_atoms_checked, replace=False))
    expected = finite_difference_forces(simulation, atoms)
    actual = forces[atoms]

    magnitude = np.abs(expected)
    tolerance = np.where(magnitude > RELATIVE_ABOVE_EV_A, RELATIVE_TOLERANCE * magnitude,
                         ABSOLUTE_TOLERANCE_EV_A)
    excess = np.abs(actual - expected) / tolerance
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert np.max(magnitude) > 1e-3, "configuration too close to equilibrium to test forces"
    assert excess[worst] <= 1.0, (
        f"atom {atoms[worst[0]]} axis {worst[1]}: force {actual[worst]!r} eV/Å, "
        f"finite difference {expected[worst]!r} eV/Å")


# ---------------------------------------------------------------- pair potentials


def test_lennard_jones_forces(tmp_path):
    simulation = build(tmp_path, lattice("fcc", "Ar", 5.754, (4, 4, 4), 0.3), ARGON_LJ)
    assert_forces_match(simulation)


def test_morse_forces(tmp_path):
    simulation = build(tmp_path, lattice("fcc", "Ar", 5.754, (4, 4, 4), 0.3), ARGON_MORSE)
    assert_forces_match(simulation)


def test_soft_sphere_forces(tmp_path):
    # a = 4.5 Å puts nearest neighbors at 3.18 Å, inside the 3.4 Å contact
    # diameter, so every atom overlaps with about 12 others.
    potential = {"kind": "soft_sphere", "species": {"Ar": {"epsilon_eV": 1.0, "sigma_A": 3.4}}}
    simulation = build(tmp_path, lattice("fcc", "Ar", 4.5, (4, 4, 4), 0.2), potential)
    energy, _ = simulation.single_point()
    assert energy > 1.0
    assert_forces_match(simulation)


def mixture_potential() -> dict:
    return {"kind": "lennard_jones", "cutoff_A": 8.5, "shift_energy": True,
            "species": {"Ar": ARGON_LJ["species"]["Ar"], "Kr": KRYPTON}}


def test_mixture_forces(tmp_path):
    positions = fcc_positions(5.9, 4, 0.3, seed=5)
    elements = ["Ar" if i % 2 == 0 else "Kr" for i in range(len(positions))]
    write_extxyz(tmp_path / "arkr.xyz", elements, positions, cell=np.eye(3) * 4 * 5.9)
    simulation = build(tmp_path, {"structure": "arkr.xyz"}, mixture_potential())
    assert_forces_match(simulation)


def test_mixture_pair_energy(tmp_path):
    # Two atoms in free space: the energy is the single shifted Ar–Kr pair
    # term with Lorentz–Berthelot parameters, to float64 rounding.
    distance_A = 3.9
    write_extxyz(tmp_path / "pair.xyz", ["Ar", "Kr"], [(0.0, 0.0, 0.0), (distance_A, 0.0, 0.0)])
    simulation = build(tmp_path, {"structure": "pair.xyz", "periodic": False}, mixture_potential())
    energy, _ = simulation.single_point()

    argon = ARGON_LJ["species"]["Ar"]
    sigma = (argon["sigma_A"] + KRYPTON["sigma_A"]) / 2
    epsilon = math.sqrt(argon["epsilon_eV"] * KRYPTON["epsilon_eV"])

    def lennard_jones(r):
        return 4 * epsilon * ((sigma / r) ** 12 - (sigma / r) ** 6)

    expected = lennard_jones(distance_A) - lennard_jones(8.5)
    assert energy == pytest.approx(expected, rel=1e-12, abs=1e-15)


def reference_pair_energy_and_forces(simulation, pair_fn, params, coordinates):
    """The straightforward implementation the engine's pair kernel replaced:
    jax-md's ``smap`` on a half (OrderedSparse) list, forces by autodiff."""
    from jax_md import partition, smap, space

    from mdengine.neighbors import make_neighbor_builder
    system = simulation.system
    species = jnp.asarray(system.species) if len(system.species_names) > 1 else None
    energy_fn = smap.pair_neighbor_list(pair_fn, space.metric(simulation.displacement_fn),
                                        species=species, **params)
    builder = make_neighbor_builder(system, simulation.displacement_fn, params["cutoff"], 0.5, 1.25,
                                    partition.OrderedSparse, jnp.float64)
    energy, gradient = jax.value_and_grad(energy_fn)(coordinates, builder.allocate(coordinates))
    return float(energy), -np.asarray(gradient)


def test_small_box_slot_major_list(tmp_path):
    # A 22.4 Å box is under 2.5 list radii (9 Å) high, too small for the window
    # search, so jax-md builds the list and the wrapper stores it transposed.
    simulation = build(tmp_path, lattice("fcc", "Ar", 5.6, (4, 4, 4), 0.3), ARGON_LJ)
    assert not simulation.neighbors.uses_cell_list
    assert simulation.neighbors.layout == "Dense_slot_major"
    wrapper = simulation.neighbors.neighbor_fn
    coordinates = jnp.asarray(simulation.system.fractional())
    rows = wrapper.inner.allocate(coordinates)
    columns = wrapper.allocate(coordinates)
    np.testing.assert_array_equal(np.asarray(columns.idx), np.asarray(rows.idx).T)

    moved = coordinates + 0.01
    updated = jax.jit(lambda x, nbrs: nbrs.update(x))(moved, columns)
    expected = wrapper.inner.update(moved, rows)
    np.testing.assert_array_equal(np.asarray(updated.idx), np.asarray(expected.idx).T)


def test_dense_pair_kernel_equals_half_list_autodiff(tmp_path):
    # A sheared two-species cell, large enough for the full-shell cell list.
    from mdengine.potentials.pair import lennard_jones_pair
    side = 7 * 5.9
    cell = np.array([[side, 0.0, 0.0], [3.0, side, 0.0], [-2.0, 2.5, side]])
    fractional = fcc_positions(5.9, 7, 0.4, seed=8) / side
    elements = ["Kr" if i % 3 == 1 else "Ar" for i in range(len(fractional))]
    write_extxyz(tmp_path / "mix.xyz", elements, fractional @ cell, cell=cell)
    simulation = build(tmp_path, {"structure": "mix.xyz"}, mixture_potential())
    assert simulation.neighbors.uses_cell_list
    assert simulation.neighbors.layout == "Dense_slot_major"

    # Both sums are float64 in another order, so they agree to about 1e-15 of
    # the largest terms; 1e-12 relative leaves room for that.
    coordinates = jnp.asarray(simulation.system.fractional())
    energy, forces = simulation.single_point()
    argon, krypton = ARGON_LJ["species"]["Ar"], KRYPTON
    sigma = np.array([[argon["sigma_A"], (argon["sigma_A"] + krypton["sigma_A"]) / 2],
                      [(argon["sigma_A"] + krypton["sigma_A"]) / 2, krypton["sigma_A"]]])
    epsilon = np.sqrt(np.outer([argon["epsilon_eV"], krypton["epsilon_eV"]],
                               [argon["epsilon_eV"], krypton["epsilon_eV"]]))
    x6 = (sigma / 8.5) ** 6
    params = dict(sigma=jnp.asarray(sigma), epsilon=jnp.asarray(epsilon), cutoff=8.5,
                  shift=jnp.asarray(4 * epsilon * (x6 * x6 - x6)))
    species_order = simulation.system.species_names
    assert list(species_order) == ["Ar", "Kr"]
    expected_energy, expected_forces = reference_pair_energy_and_forces(
        simulation, lennard_jones_pair, params, coordinates)

    assert energy == pytest.approx(expected_energy, rel=1e-12)
    scale = np.max(np.abs(expected_forces))
    np.testing.assert_allclose(forces, expected_forces, rtol=0, atol=1e-12 * scale)


# ---------------------------------------------------------------- many-body potentials


def test_stillinger_weber_forces(tmp_path):
    potential = {"kind": "stillinger_weber", "file": str(POTENTIALS / "Si.sw")}
    simulation = build(tmp_path, lattice("diamond", "Si", 5.431, (2, 2, 2), 0.1), potential)
    assert_forces_match(simulation)


def test_tersoff_forces(tmp_path):
    potential = {"kind": "tersoff", "file": str(POTENTIALS / "Si.tersoff")}
    simulation = build(tmp_path, lattice("diamond", "Si", 5.431, (2, 2, 2), 0.1), potential)
    assert_forces_match(simulation)


def test_eam_forces(tmp_path):
    # 4 x 4 cells (14.46 Å) leave room for a 0.5 Å skin beyond the 5.4 Å cutoff.
    potential = {"kind": "eam", "file": str(POTENTIALS / "Cu_zhou04.eam.alloy")}
    simulation = build(tmp_path, lattice("fcc", "Cu", 3.615, (4, 4, 4), 0.1), potential)
    assert_forces_match(simulation)


# ---------------------------------------------------------------- plug-in


def buckingham_potential() -> dict:
    return {"kind": "custom", "function": "buckingham:buckingham", "cutoff_A": 8.5,
            "neighbor_format": "sparse", "search_path": [str(PLUGINS)],
            "parameters": dict(BUCKINGHAM)}


def test_buckingham_forces(tmp_path):
    simulation = build(tmp_path, lattice("fcc", "Ar", 5.754, (4, 4, 4), 0.3), buckingham_potential())
    assert_forces_match(simulation)


def test_buckingham_pair_closed_form(tmp_path):
    # Two atoms in free space, where most slots of the sparse list are
    # padding: the energy and force are the closed-form pair values, and the
    # padded slots add no NaN.
    distance_A = 3.7
    write_extxyz(tmp_path / "pair.xyz", ["Ar", "Ar"], [(0.0, 0.0, 0.0), (distance_A, 0.0, 0.0)])
    simulation = build(tmp_path, {"structure": "pair.xyz", "periodic": False}, buckingham_potential())
    energy, forces = simulation.single_point()

    A, rho, C, cutoff = (BUCKINGHAM[k] for k in ("A_eV", "rho_A", "C_eV_A6", "cutoff_A"))

    def buckingham(r):
        return A * math.exp(-r / rho) - C / r**6

    expected_energy = buckingham(distance_A) - buckingham(cutoff)
    # Force on atom 2 along +x is −dV/dr.
    expected_force = A / rho * math.exp(-distance_A / rho) - 6 * C / distance_A**7
    assert energy == pytest.approx(expected_energy, rel=1e-12)
    assert np.all(np.isfinite(forces))
    assert forces[1, 0] == pytest.approx(expected_force, rel=1e-12)
    assert forces[0, 0] == pytest.approx(-expected_force, rel=1e-12)


# ---------------------------------------------------------------- triclinic cell


def sheared_argon(tmp_path: Path) -> tuple[Simulation, Simulation]:
    """The same displaced argon crystal in a cubic cell and in a sheared cell.

    The sheared cell replaces b by a + b, a vector of the same periodic
    lattice, so both cells describe one infinite crystal. 5 x 5 x 5 cells
    (28.77 Å) keep the sheared cell's smallest height, 28.77 / √2 = 20.3 Å,
    above twice the 8.5 Å cutoff plus skin.
    """
    edge_A = 5 * 5.754
    positions = fcc_positions(5.754, 5, 0.3, seed=9)
    elements = ["Ar"] * len(positions)
    cubic = np.eye(3) * edge_A
    sheared = np.array([[edge_A, 0.0, 0.0], [edge_A, edge_A, 0.0], [0.0, 0.0, edge_A]])
    write_extxyz(tmp_path / "cubic.xyz", elements, positions, cell=cubic)
    write_extxyz(tmp_path / "sheared.xyz", elements, positions, cell=sheared)
    return (build(tmp_path, {"structure": "cubic.xyz"}, ARGON_LJ, skin_A=0.3),
            build(tmp_path, {"structure": "sheared.xyz"}, ARGON_LJ, skin_A=0.3))


def test_triclinic_matches_cubic(tmp_path):
    cubic, sheared = sheared_argon(tmp_path)
    cubic_energy, cubic_forces = cubic.single_point()
    sheared_energy, sheared_forces = sheared.single_point()
    # Same pairs at the same distances, summed in another order: float64
    # rounding of a −30 eV sum is below 1e-11 eV.
    assert sheared_energy == pytest.approx(cubic_energy, rel=1e-12)
    assert np.max(np.abs(sheared_forces - cubic_forces)) <= 1e-10


def test_triclinic_forces(tmp_path):
    _, sheared = sheared_argon(tmp_path)
    assert_forces_match(sheared)
