"""Command line: ``mdengine train CONFIG``, ``mdengine evaluate MODEL DATASET`` and
``mdengine import SCHNETPACK_MODEL --output DIR``."""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``train``, ``evaluate`` and ``import`` subcommands; each sets ``handler``."""
    train = subparsers.add_parser("train", help="train a learned potential from a YAML configuration")
    train.add_argument("config", type=Path, help="training configuration (YAML)")
    train.set_defaults(handler=cmd_train)

    evaluate = subparsers.add_parser("evaluate", help="errors of a learned potential on a dataset")
    evaluate.add_argument("model", type=Path, help="model directory")
    evaluate.add_argument("dataset", type=Path, help="labelled structures (.xyz, .extxyz, .npz)")
    evaluate.add_argument("--plot", type=Path, help="write a parity plot to this PNG file")
    evaluate.add_argument("--batch-size", type=int, default=16, help="structures per batch")
    evaluate.set_defaults(handler=cmd_evaluate)

    importer = subparsers.add_parser(
        "import", help="convert a schnetpack 2.x SchNet model into a model directory")
    importer.add_argument("source", type=Path,
                          help="neutral export (.npz from tools/peers/export_schnetpack.py), or a "
                               "torch-saved schnetpack model when torch is installed")
    importer.add_argument("--output", type=Path, required=True, help="model directory to write")
    importer.add_argument("--species", help="comma-separated elements to keep, in this order "
                                            "(default: every element of the embedding table)")
    importer.add_argument("--energy-unit", default="eV",
                          help="energy unit the model was trained in: eV, meV, kcal/mol, kJ/mol, "
                               "Hartree (default eV)")
    importer.add_argument("--length-unit", default="Å",
                          help="length unit the model was trained in: Å, nm, Bohr (default Å)")
    importer.add_argument("--overwrite", action="store_true",
                          help="replace a model directory already at --output")
    importer.set_defaults(handler=cmd_import)


def cmd_train(args) -> int:
    """Train from the configuration ``args.config`` and print the model directory and its test errors."""
    from mdengine.learned.training import METRICS_JSON, train_from_file
    result = train_from_file(args.config)
    m = result.metrics
    print(f"{result.model_dir}: trained {m['epochs_run']} epochs in {m['training_time_s']:.1f} s; "
          f"test energy MAE {m['energy_mae_meV_per_atom']:.3f} meV/atom, force MAE "
          f"{m['force_mae_meV_per_A']:.3f} meV/Å, RMSE {m['force_rmse_meV_per_A']:.3f} meV/Å "
          f"({METRICS_JSON})")
    return 0


def cmd_evaluate(args) -> int:
    """Print the model's errors on the dataset as JSON; optionally write a parity plot."""
    from mdengine.config import InputError
    from mdengine.learned.data import read_dataset
    from mdengine.learned.evaluate import evaluate_model, parity_plot
    from mdengine.learned.model_io import load_model
    if args.batch_size < 1:
        raise InputError(f"--batch-size: must be at least 1 (got {args.batch_size})")
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")
    model = load_model(args.model)
    structures = read_dataset(args.dataset)
    metrics, predictions = evaluate_model(model, structures, args.batch_size)
    if args.plot is not None:
        parity_plot(predictions, args.plot, title=f"{args.model.name} on {args.dataset.name}")
        metrics["plot"] = str(args.plot)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_import(args) -> int:
    """Import a schnetpack SchNet model and print a one-line summary."""
    from mdengine.learned.import_schnetpack import describe, import_model
    species = None
    if args.species is not None:
        species = [symbol.strip() for symbol in args.species.split(",") if symbol.strip()]
    model, report = import_model(args.source, args.output, species=species,
                                 energy_unit=args.energy_unit, length_unit=args.length_unit,
                                 overwrite=args.overwrite)
    print(describe(model, args.source, report))
    return 0
