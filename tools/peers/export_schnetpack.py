#!/usr/bin/env python
"""Export a schnetpack 2.x SchNet model to the neutral .npz that ``mdengine import`` reads.

Runs in the peer environment (Python 3.11 with torch and schnetpack, e.g.
tools/peers/.venv), not in mdengine's .venv. Subcommands:

    export MODEL --output OUT.npz [--reference STRUCTURE ...]
        Write the weights and settings. With --reference, also store schnetpack's
        float64 energies and forces on those structures (.xyz/.extxyz), so that
        ``mdengine import`` can check its result against them.
    random OUT.pt [--features 128 --interactions 3 --gaussians 20 --cutoff 5 --seed 0 ...]
        Save a seeded random schnetpack SchNet potential (for tests and benchmarks).
    evaluate MODEL --structures S ... --dtype float64 --json OUT.json
        Write schnetpack's energies (model unit) and forces (model unit per
        length unit) on the structures.

The array layout and the model checks live in mdengine/learned/schnetpack_format.py,
which this script loads by file path, so neither jax nor mdengine has to be
installed here. Other peer scripts import :func:`import_schnetpack` and
:func:`load_model` from this file, so the torch 2.13 compatibility fix
below exists once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import typing
from pathlib import Path

import numpy as np

log = logging.getLogger("export_schnetpack")
REPO = Path(__file__).resolve().parents[2]
FORMAT_MODULE = REPO / "mdengine" / "learned" / "schnetpack_format.py"


def load_format_module():
    """Load mdengine/learned/schnetpack_format.py without importing the mdengine package."""
    spec = importlib.util.spec_from_file_location("schnetpack_format", FORMAT_MODULE)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("schnetpack_format", module)
    spec.loader.exec_module(module)
    return module


def import_schnetpack():
    """Import schnetpack, first giving torch the ``T_co`` name that schnetpack 2.0.x expects.

    schnetpack 2.0.4's ``schnetpack/data/loader.py`` runs ``from
    torch.utils.data.dataloader import _collate_fn_t, T_co``. torch 2.13 no
    longer defines ``T_co`` there, so the import fails. The alias is the
    covariant type variable that older torch versions defined under that name;
    it is only used in type annotations.
    """
    import torch.utils.data.dataloader as dataloader

    if not hasattr(dataloader, "T_co"):
        dataloader.T_co = typing.TypeVar("T_co", covariant=True)
    import schnetpack

    return schnetpack


def load_model(path: str | Path, dtype: str | None = "float32"):
    """Load a torch-saved schnetpack model for inference.

    ``dtype`` is float32 or float64, or None to keep the dtypes stored in the file
    (a float64 AddOffsets table stays float64, for example).
    """
    import torch

    import_schnetpack()
    # The file is a pickled module; schnetpack saves no weights-only form.
    model = torch.load(Path(path), map_location="cpu", weights_only=False)
    model.eval()
    if dtype is None:
        return model
    return model.double() if dtype == "float64" else model.float()


def build_random_model(features: int = 128, interactions: int = 3, gaussians: int = 20,
                       cutoff_A: float = 5.0, seed: int = 0, filters: int | None = None,
                       shared: bool = False, max_z: int = 100, readout_activation: str = "silu",
                       mean_eV: float = 0.0, atomrefs: dict[int, float] | None = None,
                       weight_scale: float = 1.0):
    """Build a seeded schnetpack ``NeuralNetworkPotential`` with SchNet and random weights.

    The readout is schnetpack's default Atomwise (two layers, pyramidal
    widths); ``readout_activation`` is ``silu`` (Atomwise's default) or
    ``shifted_softplus``. ``mean_eV`` (per atom) and ``atomrefs`` (Z → eV)
    become an AddOffsets postprocessor. ``weight_scale`` multiplies the
    weights of the last readout layer, which scales energies and forces.
    """
    import torch

    spk = import_schnetpack()
    torch.manual_seed(seed)
    activations = {"silu": torch.nn.functional.silu,
                   "shifted_softplus": spk.nn.activations.shifted_softplus}
    representation = spk.representation.SchNet(
        n_atom_basis=features, n_interactions=interactions,
        radial_basis=spk.nn.GaussianRBF(n_rbf=gaussians, cutoff=cutoff_A),
        cutoff_fn=spk.nn.CosineCutoff(cutoff_A), n_filters=filters,
        shared_interactions=shared, max_z=max_z)
    energy = spk.atomistic.Atomwise(n_in=features, output_key="energy",
                                    activation=activations[readout_activation])
    with torch.no_grad():
        energy.outnet[-1].weight.mul_(weight_scale)
    postprocessors = [spk.transform.CastTo64()]
    if mean_eV or atomrefs:
        table = torch.zeros(max_z, dtype=torch.float64)
        for number, value in (atomrefs or {}).items():
            table[number] = value
        # schnetpack 2.0.4's AddOffsets evaluates ``atomrefs or torch.zeros(...)``, which raises
        # for a table of more than one element, so the table is set after construction.
        offsets = spk.transform.AddOffsets(
            "energy", add_mean=True, add_atomrefs=True, zmax=max_z,
            propery_mean=torch.tensor([mean_eV], dtype=torch.float64))
        offsets.atomref = table
        postprocessors.append(offsets)
    return spk.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[energy, spk.atomistic.Forces(energy_key="energy", force_key="forces")],
        postprocessors=postprocessors)


def read_structures(paths: list[str]):
    """Read every frame of each structure file with ASE."""
    import ase.io

    frames = []
    for path in paths:
        frames.extend(ase.io.read(path, index=":"))
    return frames


def evaluate(model, frames, dtype: str = "float64") -> list[dict]:
    """schnetpack's energy and forces for each ASE ``Atoms``, with its own neighbor list.

    ``ASENeighborList`` includes every periodic image within the cutoff, so
    cells shorter than twice the cutoff are handled.
    """
    import torch

    spk = import_schnetpack()
    cutoff = float(model.representation.cutoff_fn.cutoff.reshape(-1)[0])
    torch_dtype = torch.float64 if dtype == "float64" else torch.float32
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=spk.transform.ASENeighborList(cutoff=cutoff), dtype=torch_dtype)
    results = []
    for atoms in frames:
        output = model(converter(atoms))
        results.append({
            "numbers": atoms.numbers.astype(np.int64),
            "positions": atoms.positions.astype(np.float64),
            "cell": np.asarray(atoms.cell[:], np.float64),
            "pbc": np.asarray(atoms.pbc, bool),
            "energy": np.float64(output["energy"].detach().double().reshape(-1)[0]),
            "forces": output["forces"].detach().double().numpy(),
        })
    return results


def cmd_export(args) -> int:
    schnetpack_format = load_format_module()
    model = load_model(args.model, None)
    try:
        settings, arrays = schnetpack_format.extract_schnetpack(model, source=str(args.model))
    except schnetpack_format.UnsupportedModel as err:
        print(f"error: {args.model}: unsupported model: {err}", file=sys.stderr)
        return 2
    references = []
    if args.reference:
        references = evaluate(load_model(args.model, "float64"), read_structures(args.reference))
    import schnetpack
    import torch
    settings["exported_with"] = {"torch": torch.__version__,
                                 "schnetpack": getattr(schnetpack, "__version__", "unknown")}
    schnetpack_format.write_export(args.output, settings, arrays, references)
    print(f"{args.output}: {settings['n_atom_basis']} features, {settings['n_interactions']} "
          f"interactions, {settings['n_rbf']} Gaussians, cutoff {settings['cutoff']:g}; "
          f"{len(references)} reference structures")
    return 0


def cmd_random(args) -> int:
    import torch

    atomrefs = {}
    for item in args.atomref or []:
        number, value = item.split("=")
        atomrefs[int(number)] = float(value)
    model = build_random_model(args.features, args.interactions, args.gaussians, args.cutoff,
                               args.seed, args.filters, args.shared, args.max_z,
                               args.readout_activation, args.mean, atomrefs, args.weight_scale)
    torch.save(model, args.output)
    print(f"{args.output}: random schnetpack SchNet (seed {args.seed})")
    return 0


def cmd_evaluate(args) -> int:
    model = load_model(args.model, args.dtype)
    results = evaluate(model, read_structures(args.structures), args.dtype)
    payload = [{"energy": float(r["energy"]), "forces": r["forces"].tolist()} for r in results]
    Path(args.json).write_text(json.dumps(payload))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="write the neutral .npz of a schnetpack model")
    export.add_argument("model", type=Path, help="torch-saved schnetpack model")
    export.add_argument("--output", type=Path, required=True, help="neutral export to write (.npz)")
    export.add_argument("--reference", nargs="*", help="structures (.xyz/.extxyz) whose float64 "
                                                       "energies and forces are stored too")
    export.set_defaults(handler=cmd_export)

    random = commands.add_parser("random", help="save a seeded random schnetpack SchNet")
    random.add_argument("output", type=Path, help="model file to write (.pt)")
    random.add_argument("--features", type=int, default=128, help="n_atom_basis")
    random.add_argument("--interactions", type=int, default=3, help="n_interactions")
    random.add_argument("--gaussians", type=int, default=20, help="n_rbf")
    random.add_argument("--cutoff", type=float, default=5.0, help="cosine cutoff (Å)")
    random.add_argument("--filters", type=int, default=None, help="n_filters (default: features)")
    random.add_argument("--shared", action="store_true", help="shared_interactions=True")
    random.add_argument("--max-z", type=int, default=100, help="rows of the embedding table")
    random.add_argument("--readout-activation", choices=("silu", "shifted_softplus"),
                        default="silu", help="Atomwise activation")
    random.add_argument("--mean", type=float, default=0.0, help="per-atom energy mean (eV)")
    random.add_argument("--atomref", nargs="*", help="Z=eV single-atom reference energies")
    random.add_argument("--weight-scale", type=float, default=1.0,
                        help="factor on the last readout layer's weights")
    random.add_argument("--seed", type=int, default=0, help="torch.manual_seed")
    random.set_defaults(handler=cmd_random)

    evaluation = commands.add_parser("evaluate", help="schnetpack's energies and forces as JSON")
    evaluation.add_argument("model", type=Path, help="torch-saved schnetpack model")
    evaluation.add_argument("--structures", nargs="+", required=True, help=".xyz/.extxyz files")
    evaluation.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    evaluation.add_argument("--json", required=True, help="output JSON file")
    evaluation.set_defaults(handler=cmd_evaluate)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
