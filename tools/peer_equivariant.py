#!/usr/bin/env python
"""MD speed of mdengine's equivariant model beside a MACE model of similar size in torch-sim.

Run with mdengine's interpreter::

    .venv/bin/python tools/peer_equivariant.py [--peer-python tools/peers/.venv/bin/python]

This is a speed comparison of two models of similar size, not of the same
function. mdengine runs its shipped, trained equivariant models
(mdengine/learned/equivariant.py, an e3x network in the NequIP family):
inputs/models/ethanol_equivariant on ethanol and
inputs/models/water32_equivariant on the water boxes. The peer is MACE
(mace-torch) with random weights (seed 0), run by torch-sim's ``MaceModel``
wrapper (torch_sim.models.mace). The two networks differ in architecture,
weights and parameter count, so the forces differ too; both parameter
counts are in the output.

Each MACE network is built from the hyper-parameters in the mdengine
model's model.json:

=========================  ==============================================
mdengine (model.json)      MACE
=========================  ==============================================
cutoff_A                   r_max
radial_functions           num_bessel (mdengine's sinc basis is the same
                           sin(nπr/r_c)/r form); polynomial cutoff p = 5
max_degree                 max_ell of the spherical harmonics, and the
                           highest degree of hidden_irreps
features                   channels per degree in hidden_irreps
                           (F×0e + F×1o + F×2e ...), and MLP_irreps (F×0e,
                           the readout's hidden layer)
interactions               num_interactions
two-body messages          correlation=1 (the product basis adds no
                           many-body terms)
radial basis → weights     radial_MLP=[]: one linear layer from the Bessel
                           basis to the tensor-product weights, like e3x's
                           MessagePass
species                    atomic_numbers, atomic energies all zero
=========================  ==============================================

MACE's interaction blocks are its defaults (``RealAgnosticInteractionBlock``
first, then ``RealAgnosticResidualInteractionBlock``), and
``avg_num_neighbors`` is the mean neighbor count of the structure within
the cutoff. Both engines run NVE velocity Verlet at 0.5 fs in float32 from a
300 K Maxwell–Boltzmann start on the structures of tools/peer_learned.py:
ethanol (9 atoms, free space), water192 (12.43 Å periodic cube) and
water1536 (water32.extxyz replicated 4×2×2).

The timing is that of tools/peer_learned.py. Each engine runs in its own
long-lived worker process, pinned with ``taskset`` to 1 or 2 cores, and
warms up first, so mdengine's compilation is excluded. The engines then take
turns, one timed run each per round, for ``--repeats`` rounds. mdengine times one
compiled ``lax.scan`` chunk with its neighbor list (skin 0.5 Å); torch-sim
builds vesin's neighbor list at every step. Every run restarts from the same
positions and velocities, and its final temperature is recorded to check
that it stayed finite. The ratio column is mdengine's steps/s over MACE's,
per round (median and range over the rounds), so a value above 1 means
mdengine is faster.

Run it on an otherwise idle machine. With another process pinned to core 1,
a 2-thread MACE run on water192 dropped from about 50 to about 1 step/s
while its CPU time still counted one core.

Output: a printed table and ``--output`` (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_learned  # noqa: E402  (structures, workers and timing loop live there)

log = logging.getLogger("peer_equivariant")
REPO = peer_learned.REPO
ENGINES = ("mdengine", "torch-sim-mace")
SYSTEMS = peer_learned.SYSTEMS
MODELS = {"ethanol": REPO / "inputs" / "models" / "ethanol_equivariant",
          "water192": REPO / "inputs" / "models" / "water32_equivariant",
          "water1536": REPO / "inputs" / "models" / "water32_equivariant"}
# Timed steps per run, aimed at 3–6 s per run with one thread. The counts are estimates from
# smoke-test runs of 1 to 300 steps with one thread on a shared 2-core Xeon VM. There mdengine
# ran about 900–1800 steps/s on ethanol, 9–13 on water192 and 0.5 on water1536, and MACE about
# 140, 40 and 4.5.
STEPS = {
    "ethanol": {"mdengine": 3000, "torch-sim-mace": 400},
    "water192": {"mdengine": 40, "torch-sim-mace": 120},
    "water1536": {"mdengine": 3, "torch-sim-mace": 15},
}
SEED = peer_learned.SEED
PEER_VERSIONS = ("torch", "torch-sim-atomistic", "mace-torch", "e3nn", "ase")


# ---------------------------------------------------------------- models


def read_model_json(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / "model.json").read_text())


def mace_settings(description: dict) -> dict:
    """Map an mdengine equivariant model.json to MACE hyper-parameters (plain JSON values)."""
    spec = description["model"]
    if spec["architecture"] != "equivariant":
        raise ValueError(f"model.json describes a {spec['architecture']!r} model; expected "
                         "'equivariant'")
    features, max_degree = spec["features"], spec["max_degree"]
    # e3x's features without pseudotensors have parity (−1)^ℓ at degree ℓ, as 0e + 1o + 2e ...
    hidden = " + ".join(f"{features}x{degree}{'e' if degree % 2 == 0 else 'o'}"
                        for degree in range(max_degree + 1))
    return {"r_max": spec["cutoff_A"], "num_bessel": spec["radial_functions"],
            "num_polynomial_cutoff": 5, "max_ell": max_degree,
            "num_interactions": spec["interactions"], "hidden_irreps": hidden,
            "MLP_irreps": f"{features}x0e", "correlation": 1, "radial_MLP": [],
            "species": description["species"]}


def count_mdengine_parameters(model_dir: Path) -> int:
    import jax
    import numpy as np

    from mdengine.learned.model_io import load_model

    params = load_model(model_dir).params
    return sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params))


def build_mace(settings: dict, avg_num_neighbors: float, seed: int = SEED):
    """Build a MACE network with random weights drawn after ``torch.manual_seed(seed)``."""
    import ase.data
    import mace  # noqa: F401  (sets torch.load's override before e3nn loads its constants)
    import numpy as np
    import torch
    from e3nn import o3
    from mace.modules import MACE, RealAgnosticInteractionBlock, RealAgnosticResidualInteractionBlock

    numbers = sorted(ase.data.atomic_numbers[symbol] for symbol in settings["species"])
    torch.manual_seed(seed)
    return MACE(
        r_max=settings["r_max"], num_bessel=settings["num_bessel"],
        num_polynomial_cutoff=settings["num_polynomial_cutoff"], max_ell=settings["max_ell"],
        interaction_cls=RealAgnosticResidualInteractionBlock,
        interaction_cls_first=RealAgnosticInteractionBlock,
        num_interactions=settings["num_interactions"], num_elements=len(numbers),
        hidden_irreps=o3.Irreps(settings["hidden_irreps"]),
        MLP_irreps=o3.Irreps(settings["MLP_irreps"]), atomic_energies=np.zeros(len(numbers)),
        avg_num_neighbors=avg_num_neighbors, atomic_numbers=numbers,
        correlation=settings["correlation"], gate=torch.nn.functional.silu,
        radial_MLP=settings["radial_MLP"])


def mean_neighbors(atoms, cutoff_A: float) -> float:
    """Return the mean number of neighbors per atom within ``cutoff_A`` (Å)."""
    from ase.neighborlist import neighbor_list

    return len(neighbor_list("i", atoms, cutoff_A)) / len(atoms)


# ---------------------------------------------------------------- workers


def mace_worker(args) -> None:
    """Serve timed torch-sim NVE runs with a random MACE built from ``args.model``'s model.json."""
    torch = peer_learned.torch_threads(args.threads)
    settings = mace_settings(read_model_json(Path(args.model)))
    atoms = peer_learned.read_atoms(args.structure, args.periodic)
    neighbors = mean_neighbors(atoms, settings["r_max"])
    # mace prints a notice about cuequivariance to stdout on import, and stdout carries the
    # worker's JSON replies.
    with contextlib.redirect_stdout(sys.stderr):
        from torch_sim.models.mace import MaceModel

        network = build_mace(settings, neighbors)
        model = MaceModel(network, device=torch.device("cpu"), dtype=torch.float32,
                          compute_forces=True, compute_stress=False)
    parameters = sum(p.numel() for p in network.parameters())
    peer_learned.serve_torch_sim(model, args, {
        "engine": "torch-sim-mace", "torch": torch.__version__, "mace_settings": settings,
        "avg_num_neighbors": neighbors, "parameters": parameters})


WORKERS = {"mdengine": peer_learned.mdengine_worker, "torch-sim-mace": mace_worker}


# ---------------------------------------------------------------- orchestration


def steps_for(system: str, engine: str, factor: float) -> int:
    return max(1, round(STEPS[system][engine] * factor))


def ratio_summary(mdengine_runs: list[dict], peer_runs: list[dict]) -> dict:
    """Divide mdengine's steps/s by the peer's in each round; return median, range and ratios."""
    ratios = [m["steps_per_s"] / p["steps_per_s"] for m, p in zip(mdengine_runs, peer_runs)]
    return {"median": statistics.median(ratios), "range": [min(ratios), max(ratios)],
            "per_round": ratios}


def measure(args, structures: dict) -> list[dict]:
    """Time both engines on each system and thread count, and return one record per engine.

    The peer's record also contains the per-round ratios (``mdengine_over_peer``).
    """
    records = []
    script = Path(__file__).resolve()
    for threads in args.threads:
        for system in args.systems:
            model_dir = MODELS[system]
            steps = {engine: steps_for(system, engine, args.steps_factor) for engine in ENGINES}
            commands = {engine: peer_learned.worker_command(
                engine, threads, structures[system], model_dir, model_dir, args.peer_python,
                steps[engine], args.skin, script=script) for engine in ENGINES}
            ready, runs = peer_learned.alternate_rounds(f"{system} {threads}t", commands,
                                                        args.repeats)
            pair = [peer_learned.summarize(system, structures[system]["atoms"], threads, engine,
                                           steps[engine], ready[engine], runs[engine])
                    for engine in ENGINES]
            pair[1]["mdengine_over_peer"] = ratio_summary(runs["mdengine"], runs["torch-sim-mace"])
            records += pair
    return records


def describe_models(systems: list[str]) -> dict:
    """Describe each mdengine model in use: hyper-parameters, parameter count, MACE mapping."""
    models = {}
    for system in systems:
        name = MODELS[system].name
        if name not in models:
            description = read_model_json(MODELS[system])
            models[name] = {"path": str(MODELS[system].relative_to(REPO)),
                            "hyper_parameters": description["model"],
                            "species": description["species"],
                            "parameters": count_mdengine_parameters(MODELS[system]),
                            "mace_settings": mace_settings(description)}
        models[name].setdefault("systems", []).append(system)
    return models


def mace_parameters(records: list[dict]) -> dict[str, int]:
    """Collect MACE's parameter count per system from the peer workers' ready replies."""
    return {r["system"]: r["setup"]["parameters"] for r in records
            if r["engine"] == "torch-sim-mace"}


def table(records: list[dict]) -> str:
    rows = ["| system | threads | engine | steps/run | steps/s median | range | cores used | "
            "final T (K) | mdengine / MACE median (range) |", "|---|---|---|---|---|---|---|---|---|"]
    for record in records:
        low, high = record["range_steps_per_s"]
        ratio = record.get("mdengine_over_peer")
        ratio_text = (f"{ratio['median']:.2f} ({ratio['range'][0]:.2f}–{ratio['range'][1]:.2f})"
                      if ratio else "")
        stable = "" if record["stable"] else " NOT FINITE"
        rows.append(f"| {record['system']} ({record['atoms']}) | {record['threads']} | "
                    f"{record['engine']} | {record['steps_per_run']} | "
                    f"{record['median_steps_per_s']:.1f} | {low:.1f}–{high:.1f} | "
                    f"{record['cores_used']:.2f} | {record['final_temperature_K']:.0f}{stable} | "
                    f"{ratio_text} |")
    return "\n".join(rows)


def parameter_lines(models: dict, records: list[dict]) -> str:
    mace = mace_parameters(records)
    lines = []
    for name, model in models.items():
        counts = sorted({mace[s] for s in model["systems"] if s in mace})
        lines.append(f"{name}: {model['parameters']:,} parameters in mdengine "
                     f"({model['hyper_parameters']}); random MACE "
                     f"({model['mace_settings']['hidden_irreps']}, correlation 1): "
                     f"{', '.join(f'{c:,}' for c in counts)} parameters")
    return "\n".join(lines)


def peer_versions(peer_python: Path) -> dict:
    code = ("import importlib.metadata as m, json, sys; "
            "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))")
    return json.loads(subprocess.run([str(peer_python), "-c", code, *PEER_VERSIONS],
                                     capture_output=True, text=True, check=True).stdout)


def check_peer(parser, peer_python: Path) -> None:
    """Stop with a parser error unless ``peer_python`` imports mace and torch-sim's MaceModel."""
    if not peer_python.exists():
        parser.error(f"--peer-python {peer_python} not found; run tools/peers/setup.sh")
    check = "import mace.modules; from torch_sim.models.mace import MaceModel"
    probe = subprocess.run([str(peer_python), "-c", check], capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        parser.error(f"--peer-python {peer_python} cannot import mace and torch-sim's MaceModel "
                     f"({last}); run tools/peers/setup.sh")


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        description="MD speed of mdengine's equivariant model beside a random-weight MACE of "
                    "similar size in torch-sim (a speed comparison, not the same function)")
    parser.add_argument("--peer-python", type=Path, default=peer_learned.DEFAULT_PEER_PYTHON,
                        help="Python of the peer environment (torch, mace-torch, torch-sim)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated systems, from {','.join(SYSTEMS)}")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (1 or 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine")
    parser.add_argument("--steps-factor", type=float, default=1.0,
                        help="factor on the timed steps per run (below 1 for smoke tests)")
    parser.add_argument("--skin", type=float, default=peer_learned.SKIN_A,
                        help="mdengine's neighbor-list skin (Å)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "peer_equivariant",
                        help="folder for the structures")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results (default: WORK_DIR/peer_equivariant.json)")

    # Worker mode, used by the worker processes that the tool starts.
    peer_learned.add_worker_arguments(parser, ENGINES)
    args = parser.parse_args(argv)
    if args.worker:
        return parser, args

    args.systems = [s for s in args.systems.split(",") if s]
    args.threads = [int(t) for t in args.threads.split(",")]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}: choose from {', '.join(SYSTEMS)}")
    if not set(args.threads) <= {1, 2}:
        parser.error("--threads takes 1 and/or 2 (the workers are pinned to cores 0 or 0,1)")
    if args.repeats < 1 or args.steps_factor <= 0:
        parser.error("--repeats must be at least 1 and --steps-factor positive")
    return parser, args


def main(argv=None) -> int:
    parser, args = parse_arguments(argv)
    if args.worker:
        args.threads = int(args.threads)
        WORKERS[args.worker](args)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    check_peer(parser, args.peer_python)
    args.work_dir = args.work_dir.resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    structures = peer_learned.prepare_structures(args.work_dir)
    models = describe_models(args.systems)
    records = measure(args, structures)
    for record in records:
        if not record["stable"]:
            log.warning("%s %s with %d thread(s): a run ended at a temperature that is not "
                        "finite or above 1e5 K, so its speed is not comparable", record["system"],
                        record["engine"], record["threads"])

    import e3x
    import jax
    result = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
              "note": "speed comparison of models of similar size, not the same function: "
                      "mdengine runs its trained equivariant models, torch-sim runs MACE "
                      f"with random weights (seed {SEED}) and mapped hyper-parameters",
              "versions": dict(peer_versions(args.peer_python), jax=jax.__version__,
                               e3x=e3x.__version__),
              "timestep_fs": peer_learned.TIMESTEP_FS, "skin_A": args.skin,
              "precision": "float32", "steps_factor": args.steps_factor, "models": models,
              "mace_parameters": mace_parameters(records),
              "total_s": time.perf_counter() - begin, "records": records}
    output = args.output or args.work_dir / "peer_equivariant.json"
    output.write_text(json.dumps(result, indent=2))
    print("Speed comparison of models of similar size, not the same function "
          "(mdengine: trained; MACE: random weights, mapped hyper-parameters).")
    print(parameter_lines(models, records))
    print(table(records))
    print(f"{output}: written in {result['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
