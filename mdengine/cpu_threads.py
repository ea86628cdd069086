"""Size of XLA's CPU thread pool, chosen from the system size before JAX starts.

XLA's CPU client sizes its thread pool once, when JAX creates its backends,
from the cores the process may run on. For small systems, handing each
small operation between threads costs more than the second core brings.
Measured on a 2-core Xeon (jaxlib 0.12.0.1, steps/s with a pool of one
thread against two, both with two cores available):

=================================  =======  ===========  ===========
system                               atoms  one thread   two threads
=================================  =======  ===========  ===========
ethanol, shipped SchNet                  9        9,368        6,222
ethanol ×4 replicas, SchNet             36        1,864        1,398
ethanol ×10 replicas, SchNet            90          785          830
ethanol, equivariant                     9        1,867        1,605
ethanol ×4, equivariant                 36          414          434
water, equivariant                      96         56.7          110
water, SchNet                           96          260          267
argon, Lennard-Jones                   256        7,720        7,322
argon, Lennard-Jones                   500        3,400        3,650
argon, Lennard-Jones                 1,372        1,489        1,464
argon, Lennard-Jones                 2,048        1,048          992
argon, Lennard-Jones                 4,000          557          513
LAMMPS in.lj, Lennard-Jones         32,000         41.6         41.0
=================================  =======  ===========  ===========

The pair-potential force is a loop over neighbor slots, and XLA runs a
loop's body on one thread, so Lennard-Jones gains little from a second
thread; only the neighbor-list rebuild uses it. ``auto`` gives one thread
per ``ATOMS_PER_THREAD`` atoms (over all replicas), at least one and at
most the cores available.
"""

from __future__ import annotations

import argparse
import logging
import math
import os

log = logging.getLogger(__name__)

# Atoms (summed over replicas) per pool thread. For the learned models the
# crossover above lies between 36 and 90 atoms. For Lennard-Jones the two
# pool sizes were within 8 % of each other from 500 to 32,000 atoms.
# NOTE: measured on 2 cores, and for classical potentials with Lennard-Jones only.
ATOMS_PER_THREAD = {"learned": 48, "classical": 8000}


def available_cores() -> int:
    """Return the number of cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def auto_threads(atoms: int, learned: bool, cores: int) -> int:
    """Return the pool size for ``atoms`` atoms over all replicas, at most ``cores``."""
    per_thread = ATOMS_PER_THREAD["learned" if learned else "classical"]
    return max(1, min(cores, math.ceil(atoms / per_thread)))


def backend_started() -> bool:
    """Report whether JAX has created its backends, after which the pool size is fixed."""
    from jax._src import xla_bridge
    return xla_bridge.backends_are_initialized()


def start_backend(threads: int) -> int:
    """Create JAX's backends with a CPU pool of ``threads`` threads; return the pool size.

    The calling thread is restricted to its first ``threads`` allowed cores
    while the backends are created, because XLA sizes the pool from them.
    Afterwards every thread of the process, the pool's included, may run on
    all the cores again. When the backends exist already, or the OS has no
    affinity call, nothing changes and the return value is the current
    core count.
    """
    import jax

    cores = available_cores()
    if threads < cores and backend_started():
        log.warning("XLA's CPU pool keeps %d threads, not %d: JAX started before the pool "
                    "size was chosen", cores, threads)
    elif threads < cores and not hasattr(os, "sched_setaffinity"):
        log.warning("XLA's CPU pool keeps %d threads, not %d: this OS cannot set CPU affinity",
                    cores, threads)
    if backend_started() or threads >= cores or not hasattr(os, "sched_setaffinity"):
        jax.devices()
        return cores

    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(sorted(allowed)[:threads]))
    try:
        jax.devices()
    finally:
        _allow_all_threads(allowed)
    return threads


def _allow_all_threads(allowed: set[int]) -> None:
    """Let every thread of this process run on ``allowed`` cores again."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), allowed)
        except OSError:      # the thread has exited since the listing
            pass


def configure(requested: str | int, atoms: int, learned: bool) -> str:
    """Start JAX with the pool size ``requested`` (``"auto"`` or a count).

    ``atoms`` is the atom count over all replicas. Returns one line for the
    run's log that names the pool size and why it was chosen.
    """
    cores = available_cores()
    if requested == "auto":
        kind = "learned" if learned else "classical"
        threads = auto_threads(atoms, learned, cores)
        reason = (f"auto: one thread per {ATOMS_PER_THREAD[kind]} atoms with a {kind} potential, "
                  f"{atoms} atoms; --cpu-threads N sets it")
    else:
        threads = min(int(requested), cores)
        reason = "--cpu-threads"
        if int(requested) > cores:
            reason += f" {requested}, capped at the {cores} cores this process may use"
    started = start_backend(threads)
    return f"XLA CPU thread pool: {started} of {cores} cores ({reason})"


def configure_for_input(spec, base_dir, requested: str | int = "auto") -> str:
    """Start JAX with the pool size for input ``spec`` (files relative to ``base_dir``).

    Returns the log line of :func:`configure`.
    """
    from mdengine.system import build_system

    # The system is built again, with its log messages, when the simulation is set up.
    system_log = logging.getLogger("mdengine.system")
    level = system_log.level
    system_log.setLevel(logging.WARNING)
    try:
        atoms = build_system(spec.system, base_dir, spec.seed).n_atoms * spec.run.replicas
    finally:
        system_log.setLevel(level)
    return configure(requested, atoms, learned=spec.potential.kind == "learned")


def parse_threads(text: str) -> str | int:
    """Parse ``--cpu-threads`` for argparse: ``auto`` or a positive integer."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}")
    return value
