"""Many-body potentials read from LAMMPS-format parameter files.

Stillinger–Weber (``pair_style sw``), Tersoff (``pair_style tersoff``) and
EAM (``pair_style eam/alloy`` setfl). Stillinger–Weber and Tersoff use
jax-md's implementations, which support one element, and its
Stillinger–Weber fixes p = 4, q = 0 and cos θ0 = −1/3 (the published
silicon values), so files that differ are rejected rather than misread.
EAM has its own implementation (:mod:`mdengine.potentials.eam`), also for one element.
"""

from __future__ import annotations

from pathlib import Path

from jax_md import energy, partition

from mdengine.config import FilePotential, InputError
from mdengine.potentials.base import Potential
from mdengine.potentials.eam import eam_potential

SW_FIELDS = ("epsilon", "sigma", "a", "lambda", "gamma", "costheta0", "A", "B", "p", "q", "tol")


def build_file_potential(spec: FilePotential, system, displacement_fn, base_dir: Path,
                         dtype) -> Potential:
    """Build a Stillinger–Weber, Tersoff or EAM potential from ``spec.file``."""
    path = base_dir / spec.file
    if not path.is_file():
        raise InputError(f"potential.file: {path} not found")
    if len(system.species_names) != 1:
        raise InputError(f"potential: {spec.kind} supports a single element, but the system "
                         f"contains {', '.join(system.species_names)}")
    element = system.species_names[0]
    # jax-md builds a neighbor function alongside each energy function; it is
    # discarded (mdengine.neighbors builds the one used), but it needs some box.
    box = 1.0 if system.cell is None else system.box_matrix
    builder = {"stillinger_weber": _stillinger_weber, "tersoff": _tersoff, "eam": _eam}[spec.kind]
    return builder(path, element, displacement_fn, box, dtype)


def _data_lines(path: Path) -> list[list[str]]:
    """Whitespace-split lines with comments (from '#') and blank lines removed."""
    rows = []
    for line in path.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            rows.append(words)
    return rows


def read_stillinger_weber(path: Path, element: str) -> dict[str, float]:
    """Parameters of the ``element element element`` entry of a LAMMPS .sw file."""
    tokens = [word for row in _data_lines(path) for word in row]
    entry_width = 3 + len(SW_FIELDS)
    if len(tokens) % entry_width:
        raise InputError(f"{path}: expected entries of {entry_width} fields "
                         "(3 elements and 11 parameters)")
    for start in range(0, len(tokens), entry_width):
        entry = tokens[start:start + entry_width]
        if entry[:3] == [element] * 3:
            try:
                return dict(zip(SW_FIELDS, map(float, entry[3:])))
            except ValueError as err:
                raise InputError(f"{path}: entry {' '.join(entry[:3])}: {err}") from None
    raise InputError(f"{path}: no entry for {element} {element} {element}")


def _stillinger_weber(path, element, displacement_fn, box, dtype) -> Potential:
    p = read_stillinger_weber(path, element)
    fixed = {"p": 4.0, "q": 0.0, "costheta0": -1.0 / 3.0}
    for name, value in fixed.items():
        if abs(p[name] - value) > 1e-6:
            raise InputError(f"{path}: {name} = {p[name]} is not supported; jax-md's "
                             f"Stillinger–Weber form fixes {name} = {value:.6g}")
    cutoff = p["a"] * p["sigma"]
    _, energy_fn = energy.stillinger_weber_neighbor_list(
        displacement_fn, box, sigma=p["sigma"], A=p["A"], B=p["B"], lam=p["lambda"],
        gamma=p["gamma"], epsilon=p["epsilon"], cutoff=cutoff)
    return Potential(energy_fn=energy_fn, cutoff_A=cutoff, neighbor_format=partition.Dense,
                     description=f"Stillinger–Weber {element} from {path.name} (cutoff {cutoff:.4f} Å)")


def _tersoff(path, element, displacement_fn, box, dtype) -> Potential:
    try:
        with path.open() as handle:
            entries = energy.load_lammps_tersoff_parameters(handle)
    except (ValueError, IndexError) as err:
        raise InputError(f"{path}: not a LAMMPS Tersoff file: {err}") from None
    matching = [e for e in entries if (e["element1"], e["element2"], e["element3"]) == (element,) * 3]
    if not matching:
        raise InputError(f"{path}: no entry for {element} {element} {element}")
    params = matching[0]
    cutoff = float(params["R"] + params["D"])
    _, energy_fn = energy.tersoff_neighbor_list(displacement_fn, box, [params])
    return Potential(energy_fn=energy_fn, cutoff_A=cutoff, neighbor_format=partition.Dense,
                     description=f"Tersoff {element} from {path.name} (cutoff {cutoff:.4f} Å)")


def _eam(path, element, displacement_fn, box, dtype) -> Potential:
    return eam_potential(path, element, displacement_fn, dtype)
