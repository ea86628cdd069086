"""Training data: reading labelled structures, splitting them and batching graphs.

Formats:

- extended XYZ (``.xyz``, ``.extxyz``), read with ASE: one frame per
  structure, the energy (eV) in the comment line (``energy=...``), forces
  (eV/Å) as a ``forces:R:3`` column, and optionally ``Lattice="..."`` with
  ``pbc="T T T"`` for a periodic cell.
- ``.npz`` with ``positions [M, n, 3]`` (Å), ``energy [M]`` (eV),
  ``forces [M, n, 3]`` (eV/Å), the elements as ``species`` (symbols,
  ``[n]`` or ``[M, n]``) or ``numbers`` (atomic numbers, same shapes), and
  optionally ``cell`` (``[3, 3]`` or ``[M, 3, 3]``, lattice vectors as rows,
  Å) for periodic structures. All structures in one file have n atoms.

A batch packs several structures into one graph of fixed capacity. Atoms
and edges are concatenated with offsets, and the remaining slots are
padding: atoms of species 0 with no edges, and edges marked invalid. Every
batch of a run therefore has the same shapes and compiles once. Neighbor lists are built on the host,
per structure, with every periodic image within the cutoff.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from mdengine.config import InputError
from mdengine.system import cell_heights

DATASET_EXTENSIONS = (".xyz", ".extxyz", ".npz")


@dataclasses.dataclass
class Structure:
    """One labelled configuration.

    Attributes:
      elements: ``[n]`` element symbols.
      positions: ``[n, 3]`` Cartesian positions (Å).
      energy: total energy (eV).
      forces: ``[n, 3]`` forces (eV/Å).
      cell: ``[3, 3]`` lattice vectors as rows (Å), or None for free space.
    """

    elements: list[str]
    positions: np.ndarray
    energy: float
    forces: np.ndarray
    cell: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return len(self.elements)


# ---------------------------------------------------------------- reading


def read_dataset(path: str | Path) -> list[Structure]:
    """Read every structure of an extended XYZ or ``.npz`` file.

    Raises:
      InputError: missing file, unknown format, or missing labels.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: dataset file not found")
    suffix = path.suffix.lower()
    if suffix not in DATASET_EXTENSIONS:
        raise InputError(f"{path}: unsupported dataset format {suffix!r}; use "
                         f"{', '.join(DATASET_EXTENSIONS)}")
    structures = _read_npz(path) if suffix == ".npz" else _read_extxyz(path)
    if not structures:
        raise InputError(f"{path}: the dataset contains no structures; add frames")
    return structures


def _read_extxyz(path: Path) -> list[Structure]:
    import ase.io
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as err:   # ASE raises many types for malformed files
        raise InputError(f"{path}: not readable as extended XYZ: {err}") from None
    return [_from_atoms(path, i, atoms) for i, atoms in enumerate(frames)]


def _from_atoms(path: Path, index: int, atoms) -> Structure:
    where = f"{path}: frame {index + 1}"
    try:
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(), dtype=np.float64)
    except Exception:   # ASE raises PropertyNotImplementedError or RuntimeError
        raise InputError(f"{where}: needs energy=... in the comment line and a forces:R:3 "
                         "column (eV, eV/Å)") from None
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise InputError(f"{where}: pbc {pbc.tolist()} is periodic along some axes only; "
                         "use all or none")
    cell = np.asarray(atoms.cell.array, dtype=np.float64) if pbc.all() else None
    return Structure(list(atoms.get_chemical_symbols()), np.asarray(atoms.positions, np.float64),
                     energy, forces, cell)


def _read_npz(path: Path) -> list[Structure]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable .npz file: {err}") from None
    for key in ("positions", "energy", "forces"):
        if key not in arrays:
            raise InputError(f"{path}: missing array {key!r}; expected positions, energy, forces "
                             "and species or numbers")
    positions = np.asarray(arrays["positions"], np.float64)
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise InputError(f"{path}: positions has shape {positions.shape}, expected [M, n, 3] (structures, atoms, xyz)")
    m, n, _ = positions.shape
    energy = np.asarray(arrays["energy"], np.float64).reshape(-1)
    forces = np.asarray(arrays["forces"], np.float64)
    if energy.shape != (m,) or forces.shape != positions.shape:
        raise InputError(f"{path}: energy {energy.shape} and forces {forces.shape} do not match "
                         f"positions {positions.shape}")
    elements = _npz_elements(path, arrays, m, n)
    cells = _npz_cells(path, arrays, m)
    return [Structure(list(elements[i]), positions[i], float(energy[i]), forces[i], cells[i])
            for i in range(m)]


def _npz_elements(path: Path, arrays: dict, m: int, n: int) -> np.ndarray:
    if "species" in arrays:
        symbols = np.asarray(arrays["species"]).astype(str)
        unknown = sorted(set(symbols.ravel()) - set(chemical_symbols[1:]))
        if unknown:
            raise InputError(f"{path}: 'species' contains unknown element symbols {unknown}; use symbols such as H, O")
    elif "numbers" in arrays:
        numbers = np.asarray(arrays["numbers"])
        if numbers.size and (numbers.min() < 1 or numbers.max() >= len(chemical_symbols)):
            raise InputError(f"{path}: numbers must be atomic numbers 1 to {len(chemical_symbols) - 1}")
        symbols = np.asarray(chemical_symbols, dtype=object)[numbers].astype(str)
    else:
        raise InputError(f"{path}: missing array 'species' (element symbols) or 'numbers' "
                         "(atomic numbers)")
    if symbols.shape == (n,):
        symbols = np.broadcast_to(symbols, (m, n))
    if symbols.shape != (m, n):
        raise InputError(f"{path}: elements have shape {symbols.shape}, expected [{n}] or [{m}, {n}]")
    return symbols


def _npz_cells(path: Path, arrays: dict, m: int) -> list:
    if "cell" not in arrays:
        return [None] * m
    cell = np.asarray(arrays["cell"], np.float64)
    if cell.shape == (3, 3):
        cell = np.broadcast_to(cell, (m, 3, 3))
    if cell.shape != (m, 3, 3):
        raise InputError(f"{path}: cell has shape {cell.shape}, expected [3, 3] or [{m}, 3, 3]")
    return [c for c in cell]


# ---------------------------------------------------------------- splitting and statistics


def split_dataset(structures: list[Structure], validation_fraction: float, test_fraction: float,
                  seed: int) -> tuple[list[Structure], list[Structure], list[Structure]]:
    """Shuffle (seeded) and split into train, validation and test.

    Each non-zero fraction gets at least one structure, and training at least one.
    """
    count = len(structures)
    n_val = max(1, round(validation_fraction * count)) if validation_fraction > 0 else 0
    n_test = max(1, round(test_fraction * count)) if test_fraction > 0 else 0
    if count - n_val - n_test < 1:
        raise InputError(f"the dataset has {count} structures, too few for {n_val} validation, "
                         f"{n_test} test and at least one training structure; add structures")
    order = np.random.default_rng(seed).permutation(count)
    picked = [structures[i] for i in order]
    return picked[n_val + n_test:], picked[:n_val], picked[n_val:n_val + n_test]


def species_list(structures: list[Structure]) -> list[str]:
    """Elements present, sorted by atomic number."""
    present = {e for s in structures for e in s.elements}
    return sorted(present, key=lambda e: atomic_numbers[e])


def fit_shift_scale(structures: list[Structure], species: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-species energy shift and scale (eV).

    The shift solves ``counts @ shift ≈ energies`` by least squares, where
    ``counts[m, s]`` is the number of atoms of species s in structure m.
    The scale is the RMS force component (eV/Å × 1 Å) over atoms of each
    species. A species whose forces are all below 1e-8 eV/Å gets the
    overall RMS instead.
    """
    lookup = {e: i for i, e in enumerate(species)}
    counts = np.zeros((len(structures), len(species)))
    for row, s in enumerate(structures):
        for e in s.elements:
            counts[row, lookup[e]] += 1
    energies = np.array([s.energy for s in structures])
    shift = np.linalg.lstsq(counts, energies, rcond=None)[0]

    all_forces = np.concatenate([s.forces for s in structures])
    all_species = np.concatenate([[lookup[e] for e in s.elements] for s in structures])
    overall = float(np.sqrt(np.mean(all_forces**2)))
    overall = overall if overall > 1e-8 else 1.0
    scale = np.full(len(species), overall)
    for index in range(len(species)):
        rms = np.sqrt(np.mean(all_forces[all_species == index] ** 2))
        if rms > 1e-8:
            scale[index] = rms
    return shift, scale


# ---------------------------------------------------------------- graphs and batches


def host_neighbors(structure: Structure, cutoff_A: float):
    """Directed edges within ``cutoff_A`` (Å), both directions, every periodic image.

    Returns ``(dst [E], src [E], shift [E, 3])``: the edge vector is
    ``positions[src] + shift − positions[dst]`` (Å).
    """
    positions = structure.positions
    if structure.cell is None:
        images = np.zeros((1, 3))
    else:
        reach = [math.ceil(cutoff_A / h) for h in cell_heights(structure.cell)]
        grid = np.array([(a, b, c) for a in range(-reach[0], reach[0] + 1)
                         for b in range(-reach[1], reach[1] + 1)
                         for c in range(-reach[2], reach[2] + 1)])
        images = grid @ structure.cell
    dst_all, src_all, shift_all = [], [], []
    for image in images:
        vectors = positions[None, :, :] + image - positions[:, None, :]   # [dst, src, 3]
        within = np.sum(vectors**2, axis=-1) < cutoff_A**2
        if not image.any():
            np.fill_diagonal(within, False)
        dst, src = np.nonzero(within)
        dst_all.append(dst)
        src_all.append(src)
        shift_all.append(np.broadcast_to(image, (len(dst), 3)))
    return np.concatenate(dst_all), np.concatenate(src_all), np.concatenate(shift_all)


class GraphBatch(NamedTuple):
    """Structures packed into one padded graph (A atom slots, E edge slots, B graphs).

    Attributes:
      species: ``[A]`` int32 model species indices (0 for padding).
      positions: ``[A, 3]`` Cartesian positions (Å).
      edge_dst, edge_src: ``[E]`` int32 atom indices (A for padding).
      edge_shift: ``[E, 3]`` periodic image offsets (Å).
      edge_valid: ``[E]`` bool.
      atom_graph: ``[A]`` int32 graph of each atom (B for padding).
      atom_mask: ``[A]`` bool.
      energy: ``[B]`` reference energies (eV).
      forces: ``[A, 3]`` reference forces (eV/Å).
      n_atoms: ``[B]`` atoms per graph (0 for padding graphs).
      graph_mask: ``[B]`` bool.
    """

    species: np.ndarray
    positions: np.ndarray
    edge_dst: np.ndarray
    edge_src: np.ndarray
    edge_shift: np.ndarray
    edge_valid: np.ndarray
    atom_graph: np.ndarray
    atom_mask: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    n_atoms: np.ndarray
    graph_mask: np.ndarray


@dataclasses.dataclass
class Graph:
    """One structure with its host neighbor list and species indices."""

    structure: Structure
    species: np.ndarray
    dst: np.ndarray
    src: np.ndarray
    shift: np.ndarray


def make_graphs(structures: list[Structure], species: list[str], cutoff_A: float) -> list[Graph]:
    """Neighbor lists and species indices for each structure.

    Raises:
      InputError: an element outside ``species``.
    """
    lookup = {e: i for i, e in enumerate(species)}
    graphs = []
    for s in structures:
        missing = sorted(set(s.elements) - set(lookup))
        if missing:
            raise InputError(f"structure with elements {missing} not covered by the model's "
                             f"species {species}")
        dst, src, shift = host_neighbors(s, cutoff_A)
        graphs.append(Graph(s, np.array([lookup[e] for e in s.elements], np.int32), dst, src, shift))
    return graphs


def batch_capacity(graphs: list[Graph], batch_size: int) -> tuple[int, int]:
    """Atom and edge slots that fit any ``batch_size`` of these graphs."""
    atoms = sorted((g.structure.n_atoms for g in graphs), reverse=True)[:batch_size]
    edges = sorted((len(g.dst) for g in graphs), reverse=True)[:batch_size]
    return max(1, sum(atoms)), max(1, sum(edges))


def pack(graphs: list[Graph], batch_size: int, atom_slots: int, edge_slots: int,
         dtype=np.float64) -> GraphBatch:
    """Concatenate up to ``batch_size`` graphs into one padded :class:`GraphBatch`."""
    species = np.zeros(atom_slots, np.int32)
    positions = np.zeros((atom_slots, 3), dtype)
    forces = np.zeros((atom_slots, 3), dtype)
    atom_graph = np.full(atom_slots, batch_size, np.int32)
    edge_dst = np.full(edge_slots, atom_slots, np.int32)
    edge_src = np.full(edge_slots, atom_slots, np.int32)
    edge_shift = np.zeros((edge_slots, 3), dtype)
    energy = np.zeros(batch_size, dtype)
    n_atoms = np.zeros(batch_size, np.int32)
    atom_at = edge_at = 0
    for b, g in enumerate(graphs):
        n, e = g.structure.n_atoms, len(g.dst)
        species[atom_at:atom_at + n] = g.species
        positions[atom_at:atom_at + n] = g.structure.positions
        forces[atom_at:atom_at + n] = g.structure.forces
        atom_graph[atom_at:atom_at + n] = b
        edge_dst[edge_at:edge_at + e] = g.dst + atom_at
        edge_src[edge_at:edge_at + e] = g.src + atom_at
        edge_shift[edge_at:edge_at + e] = g.shift
        energy[b] = g.structure.energy
        n_atoms[b] = n
        atom_at += n
        edge_at += e
    return GraphBatch(species, positions, edge_dst, edge_src, edge_shift, edge_dst < atom_slots,
                      atom_graph, atom_graph < batch_size, energy, forces, n_atoms, n_atoms > 0)


def iterate_batches(graphs: list[Graph], batch_size: int, capacity: tuple[int, int],
                    rng: np.random.Generator | None = None, dtype=np.float64) -> Iterator[GraphBatch]:
    """Batches of ``batch_size`` graphs (the last one padded), shuffled when ``rng`` is given."""
    order = np.arange(len(graphs)) if rng is None else rng.permutation(len(graphs))
    for start in range(0, len(graphs), batch_size):
        chosen = [graphs[i] for i in order[start:start + batch_size]]
        yield pack(chosen, batch_size, capacity[0], capacity[1], dtype)
