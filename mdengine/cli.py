"""Command line: ``mdengine run``, ``validate`` and ``inspect``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mdengine import __version__

log = logging.getLogger("mdengine")

EXIT_INPUT_ERROR = 2
EXIT_SIMULATION_ERROR = 3
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """Argument parser whose errors are one line, pointing to ``--help`` for the usage."""

    def error(self, message):
        self.exit(EXIT_INPUT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mdengine", description="Molecular dynamics on JAX.")
    parser.add_argument("--version", action="version", version=f"mdengine {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the simulation an input file describes")
    run.add_argument("input", type=Path, help="YAML input file")
    run.add_argument("--steps", type=int, help="steps of the main phase (overrides run.steps)")
    run.add_argument("--output-dir", type=Path, help="output directory (overrides output.directory)")
    run.add_argument("--replicas", type=int, help="independent copies run together, replica r with "
                                                  "seed + r (overrides run.replicas)")
    start = run.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in the output directory, up to "
                            "run.steps (raise it to extend a finished run)")
    start.add_argument("--overwrite", action="store_true",
                       help="start a new run even if the output directory contains an earlier one")

    _add_threads_option(run)
    _add_distributed_options(run)

    validate = commands.add_parser("validate", help="check an input file without running it")
    validate.add_argument("input", type=Path, help="YAML input file")

    analyze = commands.add_parser("analyze", help="RDF, MSD and diffusion, bond lengths and "
                                                  "thermo plots of a trajectory")
    analyze.add_argument("trajectory", type=Path, help="trajectory file (.dcd .xtc .h5 .nc)")
    analyze.add_argument("--topology", type=Path, help="topology (PDB); default: the one beside "
                                                       "the trajectory")
    analyze.add_argument("--thermo", type=Path, help="thermo CSV; default: thermo.csv beside the trajectory")
    analyze.add_argument("--output-dir", type=Path, help="default: analysis/ beside the trajectory")
    analyze.add_argument("--frame-interval-ps", type=float,
                         help="time between frames (ps); default: from input.resolved.yaml")
    analyze.add_argument("--skip", type=int, default=0, help="frames to drop from the start")
    analyze.add_argument("--rdf-max-A", type=float, help="RDF range (Å); default: half the cell")

    stability = commands.add_parser("stability", help="run replicas and report when each one fails")
    stability.add_argument("input", type=Path, help="YAML input file")
    stability.add_argument("--replicas", type=int, default=8, help="independent replicas, seeds "
                                                                  "seed … seed + R − 1 (default 8)")
    stability.add_argument("--time-ps", type=float, required=True, help="simulated time per replica (ps)")
    stability.add_argument("--output-dir", type=Path, help="default: the input's output.directory "
                                                           "with '-stability' appended")
    stability.add_argument("--check", default="auto", choices=["auto", "bonds", "rdf", "none"],
                           help="structural check besides non-finite values and temperature "
                                "(auto: bonds for molecules, RDF for periodic liquids and solids)")
    stability.add_argument("--bond-threshold-A", type=float, default=0.5,
                           help="largest allowed change of a bond length (Å, default 0.5)")
    stability.add_argument("--rdf-threshold", type=float, default=0.5,
                           help="largest allowed RMS deviation of g(r) from the reference (default 0.5)")
    stability.add_argument("--rdf-reference-ps", type=float, default=1.0,
                           help="the RDF reference is the first this many ps of the run (default 1)")
    stability.add_argument("--rdf-reference", type=Path, help="reference RDF: CSV with columns r_A, g "
                                                              "(as written by analyze)")
    stability.add_argument("--temperature-factor", type=float, default=3.0,
                           help="fail above this multiple of the target or initial temperature (default 3)")
    stability.add_argument("--overwrite", action="store_true", help="replace an earlier study's outputs")
    _add_threads_option(stability)
    _add_distributed_options(stability)

    bench = commands.add_parser("bench", help="speed study over system sizes: fused engine "
                                              "against a plain Python loop")
    bench.add_argument("input", type=Path, help="YAML input file (periodic system)")
    bench.add_argument("--sizes", default="1,2", help="comma-separated n: the cell is replicated "
                                                      "n x n x n (default 1,2)")
    bench.add_argument("--replicas", dest="replica_counts", default="1",
                       help="comma-separated replica counts to measure at each size (default 1)")
    bench.add_argument("--steps", type=int, default=200, help="steps per timed repeat")
    bench.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up")
    bench.add_argument("--output-dir", type=Path, default=Path("bench"), help="where bench.json "
                                                                                "and bench.png go")

    inspect = commands.add_parser("inspect", help="describe a checkpoint")
    inspect.add_argument("path", type=Path,
                         help="a run's output directory, its checkpoint folder, or one checkpoint")
    from mdengine.learned.cli import register
    register(commands)
    return parser


def _add_threads_option(command) -> None:
    from mdengine.cpu_threads import parse_threads
    command.add_argument("--cpu-threads", type=parse_threads, default="auto", metavar="N",
                         help="threads of XLA's CPU pool: a count, or 'auto' (default) for one "
                              "thread per 48 atoms with a learned model or per 8,000 atoms with a "
                              "classical potential, at most the cores available")


def _start_jax(args, spec, base_dir: Path) -> str:
    """Start JAX with the CPU pool size that ``--cpu-threads`` and the system size choose;
    return the log line that names it."""
    from mdengine.cpu_threads import configure_for_input
    return configure_for_input(spec, base_dir, args.cpu_threads)


def _add_distributed_options(command) -> None:
    group = command.add_argument_group(
        "multi-process runs", "start the same command on every process; the replicas are spread "
        "over the devices of all processes, process 0 writes the files, and all processes write "
        "the checkpoints, so the output directory must be on a shared file system")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="address of process 0's coordination service, or 'auto' to read "
                            "everything from the cluster environment (SLURM, Open MPI)")
    group.add_argument("--num-processes", type=int, help="number of processes in the run")
    group.add_argument("--process-id", type=int, help="index of this process, 0 … N − 1")


def _start_processes(args) -> None:
    """Join a multi-process run when --coordinator is given; quiet the other processes' logs."""
    coordinator = getattr(args, "coordinator", None)
    if coordinator is None:
        if getattr(args, "num_processes", None) is not None or getattr(args, "process_id", None) is not None:
            from mdengine.config import InputError
            raise InputError("--num-processes and --process-id need --coordinator HOST:PORT")
        return
    from mdengine import distributed
    distributed.initialize(coordinator, args.num_processes, args.process_id)
    if not distributed.is_primary():
        logging.getLogger().setLevel(logging.WARNING)


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("jax").setLevel(logging.WARNING)
    # orbax logs routine notices (read-only managers, background threads) as warnings.
    for noisy in ("absl", "orbax"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _add_file_log(output_dir: Path) -> None:
    from mdengine import distributed
    if not distributed.is_primary():
        return
    handler = logging.FileHandler(output_dir / "mdengine.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def _load(args):
    from mdengine.config import load_input
    overrides = {}
    if getattr(args, "steps", None) is not None:
        overrides.setdefault("run", {})["steps"] = args.steps
    if getattr(args, "replicas", None) is not None:
        overrides.setdefault("run", {})["replicas"] = args.replicas
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
    spec = _load(args)
    # Before the imports below, because importing jax_md starts JAX.
    pool = _start_jax(args, spec, args.input.parent)
    from mdengine.config import InputError
    from mdengine.runner import RunInterrupted, execute
    from mdengine.simulation import Simulation
    from mdengine import distributed
    output_dir = Path(spec.output.directory)
    # Validate completely before creating the output directory or its log.
    simulation = Simulation(spec, args.input.parent, input_path=args.input.resolve())
    thermo = output_dir / spec.output.thermo
    if thermo.exists() and not (args.resume or args.overwrite):
        raise InputError(f"{output_dir} already contains a run ({thermo.name}); use --resume to "
                         "continue it, --overwrite to replace it, or another --output-dir")
    # Every process checks the directory before any process writes into it.
    distributed.barrier("output-checked")
    output_dir.mkdir(parents=True, exist_ok=True)
    _add_file_log(output_dir)
    log.info("mdengine %s: %s -> %s%s", __version__, args.input, output_dir,
             " (resume)" if args.resume else "")
    log.info("%s", pool)
    try:
        execute(simulation, output_dir, resume=args.resume)
    except RunInterrupted as stop:
        where = f"; checkpoint in {stop.checkpoint_dir}" if stop.checkpoint_dir else ""
        # The wrapper tools/mdengine passes its own path, which is what a user typed.
        program = os.environ.get("MDENGINE_COMMAND", "mdengine")
        command = f"{program} run {args.input} --resume"
        if args.steps is not None:
            command += f" --steps {args.steps}"
        if args.replicas is not None:
            command += f" --replicas {args.replicas}"
        if args.output_dir is not None:
            command += f" --output-dir {args.output_dir}"
        if args.coordinator is not None:
            command += " on every process, with its --coordinator, --num-processes and --process-id"
        print(f"{stop}{where}. Resume with: {command}", file=sys.stderr)
        return 128 + stop.signum
    return 0


def cmd_stability(args) -> int:
    from mdengine.config import InputError, load_input
    spec = load_input(args.input)
    replicas = dict(run=spec.run.model_copy(update={"replicas": args.replicas}))
    # Before the imports below, because importing jax_md starts JAX.
    pool = _start_jax(args, spec.model_copy(update=replicas), args.input.parent)
    from mdengine.stability import (STABILITY_JSON, StabilityOptions, format_table, run_study,
                                    study_spec)
    from mdengine.simulation import Simulation
    from mdengine import distributed
    output_dir = args.output_dir or Path(spec.output.directory + "-stability")
    if (output_dir / STABILITY_JSON).exists() and not args.overwrite:
        raise InputError(f"{output_dir} already contains a stability study; use --overwrite or another --output-dir")
    options = StabilityOptions(args.replicas, args.time_ps, args.check, args.bond_threshold_A,
                               args.rdf_threshold, args.rdf_reference_ps, args.rdf_reference,
                               args.temperature_factor)
    options.validate()
    # Check the input and --time-ps completely before anything is written.
    Simulation(study_spec(spec, options, output_dir), args.input.parent)
    distributed.barrier("output-checked")
    output_dir.mkdir(parents=True, exist_ok=True)
    _add_file_log(output_dir)
    log.info("%s", pool)
    report = run_study(spec, args.input.parent, options, output_dir, input_path=args.input.resolve())
    if not distributed.is_primary():
        return 0
    print(format_table(report))
    print(f"report: {output_dir / STABILITY_JSON}, {output_dir / 'stability.csv'}, "
          f"{output_dir / 'survival.png'}")
    return 0


def cmd_analyze(args) -> int:
    from mdengine.analysis import analyze
    output_dir = args.output_dir or args.trajectory.parent / "analysis"
    summary = analyze(args.trajectory, output_dir, topology=args.topology, thermo=args.thermo,
                      frame_interval=args.frame_interval_ps, skip=args.skip, r_max_A=args.rdf_max_A)
    print(f"{summary['frames']} frames analysed; files in {output_dir}")
    for pair, peak in summary["rdf_first_peak_A"].items():
        print(f"  RDF {pair}: highest peak at {peak:.3f} Å")
    for element, value in summary["diffusion_A2_per_ps"].items():
        print(f"  diffusion {element}: {value:.4g} Å²/ps = {value * 1e-4:.4g} cm²/s")
    for kind, value in summary["bond_length_mean_A"].items():
        print(f"  bond {kind}: mean {value:.4f} Å")
    return 0


def cmd_bench(args) -> int:
    from mdengine.bench import run_benchmark
    from mdengine.config import InputError
    try:
        sizes = [int(n) for n in args.sizes.split(",")]
        counts = tuple(int(n) for n in args.replica_counts.split(","))
    except ValueError:
        raise InputError(f"--sizes, --replicas: expected comma-separated integers, got "
                         f"{args.sizes!r}, {args.replica_counts!r}") from None
    if any(n < 1 for n in sizes + list(counts)) or args.steps < 1 or args.repeats < 1:
        raise InputError("--sizes, --replicas, --steps and --repeats must be positive")
    spec = _load(args)
    run_benchmark(spec, args.input.parent, sizes, args.steps, args.repeats, args.output_dir, counts)
    print(f"results in {args.output_dir / 'bench.json'} and {args.output_dir / 'bench.png'}")
    return 0


def cmd_inspect(args) -> int:
    from mdengine.checkpoint import inspect_checkpoint
    record = inspect_checkpoint(args.path)
    fields = [
        ("checkpoint", record["path"]),
        ("step", record["step"]),
        ("simulated time", f"{record['time_ps']:g} ps"),
        ("phase", f"{record['phase']} ({record['ensemble']})"),
        ("temperature", f"{record['temperature_K']:.2f} K"),
        ("potential energy", f"{record['potential_energy_eV']:.6f} eV"),
        ("potential", record["potential"]),
        ("atoms", record["n_atoms"]),
    ]
    if record.get("replicas", 1) > 1:
        fields.append(("replicas", f"{record['replicas']} (temperature and potential energy are "
                                   "means over replicas; frames are per replica)"))
    fields += [
        ("time step", f"{record['timestep_fs']:g} fs"),
        ("input", record.get("input_path")),
        ("input fingerprint", record["fingerprint"][:16]),
        ("output written", f"{record['frames_written']} frames, {record['thermo_rows_written']} thermo rows"),
        ("saved", f"{record['saved_at']} by mdengine {record['mdengine_version']}"),
        ("steps available", ", ".join(map(str, record["available_steps"]))),
    ]
    for name, value in fields:
        print(f"{name + ':':<19} {value}")
    return 0


def _run_errors() -> tuple[type[Exception], ...]:
    """Errors of a failed run or checkpoint.

    Called only when an exception reaches the handler, so that the commands
    can choose XLA's CPU pool size before these imports start JAX.
    """
    from mdengine.checkpoint import CheckpointError
    from mdengine.simulation import SimulationError
    return SimulationError, CheckpointError


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    from mdengine.config import InputError
    try:
        # Before anything imports jax_md, whose import starts the XLA backend.
        _start_processes(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    commands = {"run": cmd_run, "validate": cmd_validate, "inspect": cmd_inspect,
                "analyze": cmd_analyze, "bench": cmd_bench, "stability": cmd_stability,
                "train": getattr(args, "handler", None), "evaluate": getattr(args, "handler", None),
                "import": getattr(args, "handler", None)}
    try:
        return commands[args.command](args)
    except InputError as err:
        source = getattr(args, "input", None)
        for line in str(err).splitlines():
            # Errors raised while building name a key or a structure file, so prefix the input file.
            if source is not None and not line.startswith(str(source)):
                line = f"{source}: {line}"
            print(f"error: {line}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except _run_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SIMULATION_ERROR
    except KeyboardInterrupt:
        print("interrupted at once; files written so far are closed and readable, and the "
              "newest checkpoint is intact (resume with --resume)", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
