"""Structure input: readers, wrapping into the cell, overlap and box checks."""

import numpy as np
import pytest

from mdengine.config import InputError
from tests.conftest import ARGON_LJ, build

L_864 = 6 * 5.754


def write_extxyz(path, positions, cell=None, element="Ar", velocities=None):
    lines = [str(len(positions))]
    properties = "species:S:1:pos:R:3" + (":vel:R:3" if velocities is not None else "")
    lattice = "" if cell is None else 'Lattice="' + " ".join(f"{v:.12f}" for v in np.ravel(cell)) + '" '
    lines.append(f"{lattice}Properties={properties}")
    for i, p in enumerate(positions):
        row = f"{element} {p[0]:.12f} {p[1]:.12f} {p[2]:.12f}"
        if velocities is not None:
            row += " " + " ".join(f"{v:.12f}" for v in velocities[i])
        lines.append(row)
    path.write_text("\n".join(lines) + "\n")
    return path


def fcc(repeats, a=5.754):
    basis = np.array([(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)])
    cells = np.array([(i, j, k) for i in range(repeats) for j in range(repeats) for k in range(repeats)])
    return ((cells[:, None, :] + basis[None]).reshape(-1, 3)) * a


def structure_input(path, precision="float64", **system):
    return {"system": {"structure": str(path), **system}, "potential": ARGON_LJ,
            "integrator": {"ensemble": "nve", "timestep_fs": 2.0},
            "velocities": {"source": "zero"}, "run": {"steps": 0}, "precision": precision}


def lj_brute_force(positions, box, epsilon=0.0104, sigma=3.40, cutoff=8.5):
    """All-pairs minimum-image LJ energy (eV) in an orthorhombic box, shifted at the cutoff."""
    energy = 0.0
    shift = 4 * epsilon * ((sigma / cutoff) ** 12 - (sigma / cutoff) ** 6)
    for i in range(len(positions) - 1):
        d = positions[i + 1:] - positions[i]
        d -= box * np.round(d / box)
        r = np.linalg.norm(d, axis=1)
        r = r[r < cutoff]
        energy += np.sum(4 * epsilon * ((sigma / r) ** 12 - (sigma / r) ** 6) - shift)
    return energy


@pytest.fixture(scope="module")
def liquid_positions():
    rng = np.random.default_rng(11)
    return fcc(6) + rng.uniform(-0.2, 0.2, (864, 3))


def single_point(tmp_path, name, positions, cell, **system):
    path = write_extxyz(tmp_path / name, positions, cell)
    return build(structure_input(path, **system), tmp_path).single_point()


def test_wrapping_invariance(tmp_path, liquid_positions):
    # Five writings of one periodic configuration must give one energy and one force field.
    cell = np.eye(3) * L_864
    rng = np.random.default_rng(3)
    moved = liquid_positions.copy()
    atoms = rng.choice(864, 50, replace=False)
    for atom in atoms:
        moved[atom, rng.integers(3)] += L_864 * rng.choice([1, -1, 2])
    reference_energy, reference_forces = single_point(tmp_path, "a.xyz", liquid_positions, cell)
    for name, positions in [("b.xyz", liquid_positions - L_864 / 2), ("c.xyz", moved)]:
        energy, forces = single_point(tmp_path, name, positions, cell)
        assert energy == pytest.approx(reference_energy, rel=1e-10)
        assert np.max(np.abs(forces - reference_forces)) < 1e-9


def test_lattice_atom_on_face(tmp_path):
    # A perfect fcc lattice has zero force by symmetry; a missed pair would leave 1e-4 eV/Å or more.
    positions = fcc(6)
    reference_energy, _ = single_point(tmp_path, "perfect.xyz", positions, np.eye(3) * L_864)
    on_face = positions.copy()
    face_atoms = np.where(positions[:, 0] == 0)[0]
    on_face[face_atoms[0], 0] = L_864
    on_face[face_atoms[1], 0] = L_864 - 1e-6
    energy, forces = single_point(tmp_path, "face.xyz", on_face, np.eye(3) * L_864)
    assert energy == pytest.approx(reference_energy, rel=1e-10)
    assert np.max(np.abs(forces)) < 1e-6


def test_box_short_of_four_cells(tmp_path):
    # 37.9 Å is just under 4 × (8.5 + 1.0) Å: the engine must still find every pair.
    box = 37.9
    n = 1143
    rng = np.random.default_rng(5)
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.array([(i, j, k) for i in range(side) for j in range(side) for k in range(side)])[:n]
    positions = (grid + 0.5) * box / side + rng.uniform(-0.3, 0.3, (n, 3))
    energy, _ = single_point(tmp_path, "e.xyz", positions, np.eye(3) * box)
    assert energy == pytest.approx(lj_brute_force(np.mod(positions, box), box), rel=1e-9)


@pytest.mark.parametrize("case", ["duplicate", "lattice_image", "across_face"])
def test_overlap_rejected(tmp_path, case):
    box = 4 * 5.754
    positions = fcc(4)
    extra = positions[16].copy()
    if case == "lattice_image":
        extra[0] += box
    if case == "across_face":
        positions[16] = [0.10, 5.0, 5.0]
        extra = np.array([box - 0.20, 5.0, 5.0])
    positions = np.vstack([positions, extra])
    path = write_extxyz(tmp_path / "overlap.xyz", positions, np.eye(3) * box)
    with pytest.raises(InputError) as err:
        build(structure_input(path), tmp_path)
    message = str(err.value)
    assert "atoms 17 (Ar) and 257 (Ar)" in message
    assert "0.5 Å" in message


def test_close_pair_allowed(tmp_path):
    # 0.9 Å is above the 0.5 Å rejection threshold: physically absurd but not an input error.
    positions = fcc(4)
    positions = np.vstack([positions, positions[16] + [0.9, 0, 0]])
    path = write_extxyz(tmp_path / "close.xyz", positions, np.eye(3) * 4 * 5.754)
    energy, _ = build(structure_input(path), tmp_path).single_point()
    assert energy > 1e5


def test_cutoff_beyond_half_box(tmp_path):
    path = write_extxyz(tmp_path / "small.xyz", fcc(2), np.eye(3) * 2 * 5.754)
    with pytest.raises(InputError) as err:
        build(structure_input(path), tmp_path)
    message = str(err.value)
    assert "exceeds half the shortest cell height" in message
    assert "replicate the cell 2x2x2" in message


def test_missing_box(tmp_path):
    path = write_extxyz(tmp_path / "nobox.xyz", fcc(4))
    with pytest.raises(InputError) as err:
        build(structure_input(path), tmp_path)
    assert "no periodic box" in str(err.value)


def test_free_boundaries_pair_energy(tmp_path):
    path = write_extxyz(tmp_path / "pair.xyz", np.array([[0.0, 0, 0], [3.9, 0, 0]]))
    energy, forces = build(structure_input(path, periodic=False), tmp_path).single_point()
    sigma, epsilon, cutoff = 3.40, 0.0104, 8.5
    expected = 4 * epsilon * ((sigma / 3.9) ** 12 - (sigma / 3.9) ** 6 - (sigma / cutoff) ** 12
                              + (sigma / cutoff) ** 6)
    assert energy == pytest.approx(expected, rel=1e-12)
    assert forces[0, 0] == pytest.approx(-forces[1, 0], rel=1e-12)


def test_pdb_and_gro_read(tmp_path):
    import mdtraj
    positions = fcc(4)
    simulation = build(structure_input(write_extxyz(tmp_path / "ref.xyz", positions,
                                                    np.eye(3) * 4 * 5.754)), tmp_path)
    reference, _ = simulation.single_point()
    traj = mdtraj.Trajectory(positions[None] / 10, simulation.system.topology)
    traj.unitcell_vectors = np.eye(3)[None] * 4 * 0.5754
    for name in ("s.pdb", "s.gro"):
        traj.save(str(tmp_path / name))
        energy, _ = build(structure_input(tmp_path / name), tmp_path).single_point()
        # PDB stores 3 decimals in Å and GRO 3 decimals in nm: positions differ by up to 5e-3 Å.
        assert energy == pytest.approx(reference, rel=1e-2)


def test_unknown_element(tmp_path):
    path = write_extxyz(tmp_path / "x.xyz", fcc(4), np.eye(3) * 4 * 5.754, element="Qq")
    with pytest.raises(InputError) as err:
        build(structure_input(path), tmp_path)
    assert "unknown element symbol 'Qq'" in str(err.value)


def test_structure_velocities(tmp_path):
    positions = fcc(4)
    velocities = np.zeros_like(positions)
    velocities[0] = [0.01, 0, 0]
    velocities[1] = [-0.01, 0, 0]
    path = write_extxyz(tmp_path / "v.xyz", positions, np.eye(3) * 4 * 5.754, velocities=velocities)
    spec = structure_input(path)
    spec["velocities"] = {"source": "structure"}
    simulation = build(spec, tmp_path)
    import jax
    velocity = np.asarray(simulation.initial_velocities(jax.random.PRNGKey(0)))
    from mdengine.units import TIME_UNIT_FS
    assert velocity[0, 0] == pytest.approx(0.01 * TIME_UNIT_FS, rel=1e-12)
