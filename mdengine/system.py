"""Atoms, box and masses: read from a structure file or generated as a lattice.

Positions are in Å. A periodic box is stored as ``cell``, a 3x3 array whose
rows are the lattice vectors (Å). On construction the cell is rotated into
the upper-triangular form jax-md expects (a along x, b in the xy plane), so
``cell.T`` is jax-md's box matrix; positions and velocities are rotated
with it.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
from pathlib import Path

import mdtraj
import numpy as np
from scipy.spatial import cKDTree

from mdengine.config import InputError, LatticeSpec, SystemSpec
from mdengine.units import NM_PER_ANGSTROM

log = logging.getLogger(__name__)

OVERLAP_THRESHOLD_A = 0.5

_LATTICE_BASIS = {
    "sc": [(0, 0, 0)],
    "bcc": [(0, 0, 0), (0.5, 0.5, 0.5)],
    "fcc": [(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
    "diamond": [(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5),
                (0.25, 0.25, 0.25), (0.75, 0.75, 0.25), (0.75, 0.25, 0.75), (0.25, 0.75, 0.75)],
}


@dataclasses.dataclass
class System:
    """A configuration of atoms.

    Attributes:
      positions: ``[N, 3]`` Cartesian positions (Å), inside the cell when periodic.
      elements: ``[N]`` element symbols.
      masses: ``[N]`` masses (amu).
      cell: ``[3, 3]`` lattice vectors as rows (Å), upper-triangular as a
        column matrix; ``None`` for free boundaries.
      velocities: ``[N, 3]`` velocities (Å/fs) from the structure file, or ``None``.
      topology: mdtraj topology used for trajectory files.
      source: where the configuration came from, for messages.
    """

    positions: np.ndarray
    elements: list[str]
    masses: np.ndarray
    cell: np.ndarray | None
    velocities: np.ndarray | None
    topology: mdtraj.Topology
    source: str

    @property
    def n_atoms(self) -> int:
        return len(self.elements)

    @property
    def species_names(self) -> list[str]:
        """Distinct elements in order of first appearance."""
        return list(dict.fromkeys(self.elements))

    @property
    def species(self) -> np.ndarray:
        """``[N]`` int32 index of each atom's element in :attr:`species_names`."""
        lookup = {name: i for i, name in enumerate(self.species_names)}
        return np.array([lookup[e] for e in self.elements], dtype=np.int32)

    @property
    def box_matrix(self) -> np.ndarray:
        """jax-md box: lattice vectors as columns (Å)."""
        return self.cell.T

    def fractional(self) -> np.ndarray:
        """``[N, 3]`` fractional coordinates in [0, 1)."""
        return np.linalg.solve(self.cell.T, self.positions.T).T

    def heights(self) -> np.ndarray:
        """``[3]`` perpendicular distances between opposite cell faces (Å)."""
        return cell_heights(self.cell)


def cell_heights(cell: np.ndarray) -> np.ndarray:
    """Perpendicular cell heights (Å) for lattice vectors given as rows."""
    volume = abs(np.linalg.det(cell))
    areas = [np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    return volume / np.array(areas)


def upper_triangular_cell(cell: np.ndarray) -> np.ndarray:
    """Rotate lattice vectors (rows) so a ∥ x and b lies in the xy plane.

    Returns the rotated rows; as columns they form an upper-triangular matrix.
    """
    a, b, c = cell
    ax = np.linalg.norm(a)
    a_hat = a / ax
    bx = b @ a_hat
    by = np.linalg.norm(np.cross(a_hat, b))
    cx = c @ a_hat
    cy = (b @ c - bx * cx) / by
    cz = np.sqrt(max(c @ c - cx**2 - cy**2, 0.0))
    return np.array([[ax, 0, 0], [bx, by, 0], [cx, cy, cz]])


def build_system(spec: SystemSpec, base_dir: Path, seed: int, frame: int = 0) -> System:
    """Build the system an input describes, with the box checked and atoms wrapped.

    ``frame`` selects a frame of a multi-frame structure file (0 = the first).

    Raises:
      InputError: unreadable file, unknown element, missing or invalid box,
        or two atoms closer than 0.5 Å.
    """
    if spec.lattice is not None:
        system = make_lattice(spec.lattice, seed)
    else:
        system = read_structure(base_dir / spec.structure, frame)

    if spec.masses_amu:
        system = _override_masses(system, spec.masses_amu)
    if spec.box_A is not None:
        system.cell = _cell_from_box_spec(spec.box_A)
    if not spec.periodic:
        system.cell = None
    elif system.cell is None:
        raise InputError(f"{system.source}: no periodic box in the file; give system.box_A "
                         "(Å) or set system.periodic: false for free boundaries")

    if system.cell is not None:
        system = _normalise_cell(system)
    check_overlaps(system)
    return system


def _cell_from_box_spec(box) -> np.ndarray:
    box = np.asarray(box, dtype=np.float64)
    if box.ndim == 1:
        return np.diag(box)
    return box


def _override_masses(system: System, masses: dict[str, float]) -> System:
    unknown = sorted(set(masses) - set(system.elements))
    if unknown:
        raise InputError(f"system.masses_amu: element(s) {', '.join(unknown)} not in the system "
                         f"(elements present: {', '.join(system.species_names)})")
    system.masses = np.array([masses.get(e, m) for e, m in zip(system.elements, system.masses)])
    return system


def _normalise_cell(system: System) -> System:
    """Rotate into upper-triangular form and wrap positions into the cell."""
    cell = np.asarray(system.cell, dtype=np.float64)
    if np.linalg.det(cell) <= 0:
        raise InputError(f"{system.source}: lattice vectors {cell.tolist()} (Å) are not a "
                         "right-handed cell with positive volume")
    new_cell = upper_triangular_cell(cell)
    rotation = np.linalg.solve(cell, new_cell).T   # maps old Cartesian to new Cartesian
    fractional = np.linalg.solve(cell.T, system.positions.T).T

    outside = np.any((fractional < 0) | (fractional >= 1), axis=1)
    if outside.any():
        log.info("wrapped %d of %d atoms into the periodic cell", int(outside.sum()), system.n_atoms)
    fractional = np.mod(fractional, 1.0)
    fractional[fractional >= 1.0] = 0.0   # mod can round up to exactly 1.0

    system.cell = new_cell
    system.positions = fractional @ new_cell
    if system.velocities is not None:
        system.velocities = system.velocities @ rotation.T
    return system


def check_overlaps(system: System, threshold: float = OVERLAP_THRESHOLD_A) -> None:
    """Raise InputError naming the first pair of atoms closer than ``threshold`` (Å),
    using minimum-image distances when periodic."""
    points = system.positions
    image_of = np.arange(system.n_atoms)
    if system.cell is not None:
        shifts = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
        offsets = shifts @ system.cell
        points = (points[None, :, :] + offsets[:, None, :]).reshape(-1, 3)
        image_of = np.tile(image_of, len(shifts))

    tree = cKDTree(points)
    pairs = tree.query_pairs(threshold, output_type="ndarray")
    if len(pairs) == 0:
        return
    i, j = image_of[pairs[:, 0]], image_of[pairs[:, 1]]
    distances = np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
    first = int(np.argmin(distances))
    a, b = sorted((int(i[first]), int(j[first])))
    raise InputError(
        f"{system.source}: atoms {a + 1} ({system.elements[a]}) and {b + 1} ({system.elements[b]}) "
        f"are {distances[first]:.4f} Å apart (minimum image), closer than {threshold} Å; "
        "remove the duplicate or fix the coordinates")


def replicate(system: System, repeats: tuple[int, int, int]) -> System:
    """Tile a periodic system ``repeats`` times along its three cell vectors."""
    if system.cell is None:
        raise InputError(f"{system.source}: only a periodic system can be replicated")
    shifts = np.array([(i, j, k) for i in range(repeats[0]) for j in range(repeats[1])
                       for k in range(repeats[2])]) @ system.cell
    positions = (shifts[:, None, :] + system.positions[None]).reshape(-1, 3)
    copies = len(shifts)
    elements = system.elements * copies
    velocities = None if system.velocities is None else np.tile(system.velocities, (copies, 1))
    return System(positions=positions, elements=elements, masses=np.tile(system.masses, copies),
                  cell=system.cell * np.array(repeats)[:, None], velocities=velocities,
                  topology=_topology(elements),
                  source=f"{system.source} x {repeats[0]}x{repeats[1]}x{repeats[2]}")


# ---------------------------------------------------------------- lattices


def make_lattice(spec: LatticeSpec, seed: int) -> System:
    """Generate ``spec.repeats`` conventional cubic cells of a crystal (Å)."""
    basis = np.array(_LATTICE_BASIS[spec.kind])
    nx, ny, nz = spec.repeats
    cells = np.array([(i, j, k) for i in range(nx) for j in range(ny) for k in range(nz)])
    fractional = (cells[:, None, :] + basis[None, :, :]).reshape(-1, 3)
    positions = fractional * spec.lattice_constant_A

    if spec.displacement_A > 0:
        rng = np.random.default_rng(seed)
        positions = positions + rng.uniform(-spec.displacement_A, spec.displacement_A, positions.shape)

    element = _element(spec.element, "system.lattice.element")
    n_atoms = len(positions)
    cell = np.diag(np.array(spec.repeats, dtype=np.float64) * spec.lattice_constant_A)
    return System(positions=positions, elements=[element.symbol] * n_atoms,
                  masses=np.full(n_atoms, element.mass), cell=cell, velocities=None,
                  topology=_topology([element.symbol] * n_atoms),
                  source=f"{spec.kind} lattice of {element.symbol}")


def _element(symbol: str, where: str):
    try:
        return mdtraj.element.get_by_symbol(symbol.strip().capitalize())
    except KeyError:
        raise InputError(f"{where}: unknown element symbol {symbol!r}; use a symbol of the "
                         "periodic table such as Ar or Cu") from None


def _topology(elements: list[str]) -> mdtraj.Topology:
    top = mdtraj.Topology()
    chain = top.add_chain()
    for symbol in elements:
        residue = top.add_residue(symbol.upper(), chain)
        top.add_atom(symbol, mdtraj.element.get_by_symbol(symbol), residue)
    return top


# ---------------------------------------------------------------- files


def read_structure(path: Path, frame: int = 0) -> System:
    """Read frame ``frame`` of a structure file: PDB and GRO through mdtraj, XYZ/extended XYZ directly."""
    if not path.is_file():
        raise InputError(f"system.structure: file {path.resolve()} not found")
    suffix = path.suffix.lower()
    if suffix in (".xyz", ".extxyz"):
        return read_extxyz(path, frame)
    try:
        traj = mdtraj.load(str(path))
    except Exception as err:   # mdtraj raises many types for malformed files
        raise InputError(f"{path}: cannot read structure: {err}") from None
    if frame >= traj.n_frames:
        raise InputError(f"{path}: has {traj.n_frames} frame(s), but frame {frame + 1} is needed "
                         "(system.replica_frames: one frame per replica)")
    traj = traj[frame]
    elements = []
    for atom in traj.topology.atoms:
        if atom.element is None or atom.element.symbol == "VS":
            raise InputError(f"{path}: atom {atom.index + 1} ({atom.name}) has no element; "
                             "give element symbols in the file")
        elements.append(atom.element.symbol)
    cell = None
    if traj.unitcell_vectors is not None and np.any(traj.unitcell_vectors[0]):
        cell = traj.unitcell_vectors[0].astype(np.float64) / NM_PER_ANGSTROM
    return System(positions=traj.xyz[0].astype(np.float64) / NM_PER_ANGSTROM,
                  elements=elements, masses=np.array([_element(e, str(path)).mass for e in elements]),
                  cell=cell, velocities=None, topology=traj.topology, source=str(path))


def read_extxyz(path: Path, frame: int = 0) -> System:
    """Read frame ``frame`` of plain or extended XYZ (``Lattice="..."``,
    ``Properties=species:S:1:pos:R:3[:vel:R:3]``).

    Velocities, when present as a ``vel`` or ``velocities`` column, are in Å/fs.
    """
    all_lines = path.read_text().splitlines()
    start = 0
    for index in range(frame + 1):
        if start >= len(all_lines) or not all_lines[start].strip():
            raise InputError(f"{path}: has {index} frame(s), but frame {frame + 1} is needed "
                             "(system.replica_frames: one frame per replica)")
        try:
            n_atoms = int(all_lines[start].split()[0])
        except (IndexError, ValueError):
            raise InputError(f"{path}: line {start + 1}: expected the number of atoms") from None
        if index < frame:
            start += n_atoms + 2
    lines = all_lines[start:]
    if len(lines) < n_atoms + 2:
        raise InputError(f"{path}: expected {n_atoms} atom lines after the comment line, "
                         f"found {max(len(lines) - 2, 0)}")
    header = _parse_comment(lines[1])

    columns = _property_columns(header.get("properties", "species:S:1:pos:R:3"), path)
    rows = [line.split() for line in lines[2:2 + n_atoms]]
    width = sum(n for _, n in columns.values())
    for number, row in enumerate(rows, start=start + 3):
        if len(row) < width:
            raise InputError(f"{path}: line {number}: expected {width} columns, found {len(row)}")

    symbols = [row[columns["species"][0]] for row in rows]
    elements = [_element(s, f"{path}: species").symbol for s in symbols]
    positions = _float_columns(rows, columns["pos"], path)
    velocities = None
    for name in ("vel", "velocities", "velo"):
        if name in columns:
            velocities = _float_columns(rows, columns[name], path)

    cell = None
    if "lattice" in header:
        values = np.array(header["lattice"].split(), dtype=np.float64)
        if values.size != 9:
            raise InputError(f"{path}: Lattice needs 9 numbers (3 lattice vectors in Å), got {values.size}")
        cell = values.reshape(3, 3)
    return System(positions=positions, elements=elements,
                  masses=np.array([_element(e, str(path)).mass for e in elements]),
                  cell=cell, velocities=velocities, topology=_topology(elements), source=str(path))


def _parse_comment(line: str) -> dict[str, str]:
    pairs = {}
    for token in shlex.split(line, posix=True):
        if "=" in token:
            key, value = token.split("=", 1)
            pairs[key.lower()] = value
    return pairs


def _property_columns(text: str, path: Path) -> dict[str, tuple[int, int]]:
    parts = text.split(":")
    if len(parts) % 3 != 0:
        raise InputError(f"{path}: malformed Properties={text!r}; expected name:type:count triples")
    columns, start = {}, 0
    for name, _kind, count in zip(parts[::3], parts[1::3], parts[2::3]):
        columns[name.lower()] = (start, int(count))
        start += int(count)
    if "species" not in columns or "pos" not in columns:
        raise InputError(f"{path}: Properties must include species and pos columns")
    return columns


def _float_columns(rows, column, path: Path) -> np.ndarray:
    start, count = column
    try:
        return np.array([[float(v) for v in row[start:start + count]] for row in rows])
    except ValueError as err:
        raise InputError(f"{path}: {err}") from None


