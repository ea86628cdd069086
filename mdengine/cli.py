"""Command line: ``mdengine run INPUT`` and ``mdengine validate INPUT``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mdengine import __version__

log = logging.getLogger("mdengine")

EXIT_INPUT_ERROR = 2
EXIT_SIMULATION_ERROR = 3
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdengine", description="Molecular dynamics on JAX.")
    parser.add_argument("--version", action="version", version=f"mdengine {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the simulation an input file describes")
    run.add_argument("input", type=Path, help="YAML input file")
    run.add_argument("--steps", type=int, help="steps of the main phase (overrides run.steps)")
    run.add_argument("--output-dir", type=Path, help="output directory (overrides output.directory)")

    validate = commands.add_parser("validate", help="check an input file without running it")
    validate.add_argument("input", type=Path, help="YAML input file")
    return parser


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("jax", "absl", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _add_file_log(output_dir: Path) -> None:
    handler = logging.FileHandler(output_dir / "mdengine.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def _load(args):
    from mdengine.config import load_input
    overrides = {}
    if getattr(args, "steps", None) is not None:
        overrides["run"] = {"steps": args.steps}
    if getattr(args, "output_dir", None) is not None:
        overrides["output"] = {"directory": str(args.output_dir)}
    return load_input(args.input, overrides)


def cmd_validate(args) -> int:
    from mdengine.simulation import Simulation
    spec = _load(args)
    simulation = Simulation(spec, args.input.parent)
    print(f"{args.input}: valid; {simulation.system.n_atoms} atoms, "
          f"{simulation.potential.description}, "
          + ", ".join(f"{p.name}: {p.integrator.name} for {p.steps} steps" for p in simulation.phases))
    return 0


def cmd_run(args) -> int:
    from mdengine.runner import execute
    from mdengine.simulation import Simulation
    spec = _load(args)
    output_dir = Path(spec.output.directory)
    # Validate completely before creating the output directory or its log.
    simulation = Simulation(spec, args.input.parent)
    output_dir.mkdir(parents=True, exist_ok=True)
    _add_file_log(output_dir)
    log.info("mdengine %s: %s -> %s", __version__, args.input, output_dir)
    execute(simulation, output_dir)
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    from mdengine.config import InputError
    from mdengine.simulation import SimulationError
    try:
        return {"run": cmd_run, "validate": cmd_validate}[args.command](args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except SimulationError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SIMULATION_ERROR
    except KeyboardInterrupt:
        print("interrupted; files written so far are closed and readable", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
