"""Replicas: independent copies of one system advanced together.

The state and neighbor list of R replicas are the single-run pytrees with a
leading axis of length R. One chunk function, vmapped over that axis, runs
them all; the axis is sharded over the visible JAX devices with a
one-dimensional mesh, so each device advances R / D replicas and the only
communication is the shared neighbor-list rebuild check (one integer per
replica per step). When it fires, every replica rebuilds its own list.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mdengine.neighbors import REPLICA_AXIS

log = logging.getLogger(__name__)


def stack(trees: list):
    """Stack R pytrees of equal structure into one with a leading replica axis."""
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def take(tree, replica: int):
    """Return the pytree of one replica from a batched pytree."""
    return jax.tree_util.tree_map(lambda leaf: leaf[replica], tree)


def replica_sharding(n_replicas: int) -> NamedSharding | None:
    """Return a sharding that splits the replica axis over as many devices as divide R.

    Returns None when only one device would be used. Under ``jax.distributed``
    the devices are those of every process, and R is a multiple of their count.
    """
    devices = jax.devices()
    count = max(d for d in range(1, min(len(devices), n_replicas) + 1) if n_replicas % d == 0)
    if count < len(devices):
        log.info("%d replicas on %d of %d devices (the replica count must be a multiple of the "
                 "devices used)", n_replicas, count, len(devices))
    if count == 1:
        return None
    mesh = Mesh(np.array(devices[:count]), (REPLICA_AXIS,))
    log.info("replica axis sharded over %d devices (%s)", count, devices[0].platform)
    return NamedSharding(mesh, PartitionSpec(REPLICA_AXIS))


def place(tree, sharding: NamedSharding | None):
    """Put every array with a leading replica axis on the devices of ``sharding``."""
    if sharding is None:
        return tree
    return jax.tree_util.tree_map(
        lambda leaf: jax.device_put(leaf, sharding) if getattr(leaf, "ndim", 0) >= 1 else leaf, tree)


def replica_path(path: Path, replica: int, n_replicas: int) -> Path:
    """``run/trajectory.dcd`` → ``run/trajectory.replica07.dcd`` (zero-padded to R − 1)."""
    width = len(str(n_replicas - 1))
    return path.with_name(f"{path.stem}.replica{replica:0{width}d}{path.suffix}")


class ReplicaTrajectories:
    """One trajectory writer per replica, behind the single writer's interface."""

    def __init__(self, path: Path, n_replicas: int, make_writer, keep_frames: int | None = None):
        """``make_writer(path, keep_frames)`` opens one replica's file."""
        self.path = replica_path(Path(path), 0, n_replicas).with_name(
            f"{Path(path).stem}.replica*{Path(path).suffix}")
        self.writers = [make_writer(replica_path(Path(path), r, n_replicas), keep_frames)
                        for r in range(n_replicas)]

    def __getitem__(self, replica: int):
        return self.writers[replica]

    def __len__(self) -> int:
        return len(self.writers)

    @property
    def frames_written(self) -> int:
        return min(writer.frames_written for writer in self.writers)

    @property
    def topology_path(self) -> Path | None:
        return self.writers[0].topology_path

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def writer_list(trajectory) -> list:
    """Return the per-replica writers (a single writer is replica 0)."""
    if trajectory is None:
        return []
    return trajectory.writers if isinstance(trajectory, ReplicaTrajectories) else [trajectory]
