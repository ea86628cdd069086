"""Runs over several processes (hosts) with ``jax.distributed``.

Every process runs the same program on the same input. The replica axis is
sharded over the devices of all processes, so each process holds only its
own replicas' arrays. Values the host needs (frames, thermo samples, failure
steps) are gathered to every process, so every process takes the same
decisions from them. Only process 0 writes the trajectory, thermo, log and
report files. Checkpoints are written by all processes together: orbax
stores each process's shards in one checkpoint folder, which must therefore
be on a file system all processes share.

Each gather is a collective call: all processes must make the same calls in
the same order, so code that reads device arrays on the host must run on
every process, whatever it then writes.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.experimental import multihost_utils

from mdengine.config import InputError

log = logging.getLogger(__name__)

# Seconds every process waits for the others to connect before giving up.
STARTUP_TIMEOUT_S = 300


def initialize(coordinator: str, num_processes: int | None, process_id: int | None) -> None:
    """Join a multi-process run before any JAX array is created.

    Args:
      coordinator: ``HOST:PORT`` of process 0's coordination service, or
        ``auto`` to take the address, process count and index from the
        cluster environment (SLURM, Open MPI, and the others JAX detects).
      num_processes, process_id: required unless ``coordinator`` is ``auto``.

    Raises:
      InputError: missing or inconsistent arguments.
    """
    if coordinator == "auto":
        jax.distributed.initialize()
    else:
        if num_processes is None or process_id is None:
            raise InputError("--coordinator HOST:PORT needs --num-processes and --process-id "
                             "(or use --coordinator auto on a cluster JAX can detect)")
        if num_processes < 1:
            raise InputError(f"--num-processes {num_processes}: must be at least 1")
        if not 0 <= process_id < num_processes:
            raise InputError(f"--process-id {process_id}: must be in 0 … {num_processes - 1}")
        log.info("process %d: waiting up to %d s for all %d processes at %s", process_id,
                 STARTUP_TIMEOUT_S, num_processes, coordinator)
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=STARTUP_TIMEOUT_S)
    log.info("process %d of %d: %d local and %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def is_primary() -> bool:
    """Return true on the process that writes files (process 0, or the only process)."""
    return jax.process_index() == 0


def to_host(x) -> np.ndarray:
    """Return a device array as a NumPy array, gathering shards held by other processes."""
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def max_over_processes(value: int) -> int:
    """Return the largest of every process's ``value``, on every process."""
    if not is_multiprocess():
        return int(value)
    return int(np.max(multihost_utils.process_allgather(np.array([value], np.int64))))


def any_process(flag: bool) -> bool:
    """Return true on every process when ``flag`` is true on any of them."""
    return bool(max_over_processes(int(bool(flag))))


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name``."""
    if is_multiprocess():
        multihost_utils.sync_global_devices(name)


def check_replicas(n_replicas: int) -> None:
    """Reject a multi-process run whose replicas cannot be spread over all devices.

    Raises:
      InputError: R is not a multiple of the global device count.
    """
    devices = jax.device_count()
    if is_multiprocess() and n_replicas % devices:
        raise InputError(f"run.replicas: {n_replicas} replicas cannot be spread over the {devices} "
                         f"devices of {jax.process_count()} processes; use a multiple of {devices}")
