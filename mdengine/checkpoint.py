"""Checkpoints: the complete run state, saved with orbax and restored exactly.

A checkpoint holds the MD state pytree (positions, velocities, forces,
thermostat variables, PRNG key, accumulated thermostat heat), the neighbor
list's indices and reference positions, and a JSON record: the step, the
phase, how many trajectory frames and thermo rows the output files held, and
the input sections that determine the trajectory. Orbax writes each
checkpoint into a temporary folder and renames it when complete, so a
half-written checkpoint is never taken for a good one.

Restoring the neighbor list as it was (same pairs, same order, same
capacity, same cell-list capacity) is what makes a resumed run bit-identical
to an uninterrupted one: a list rebuilt at the checkpoint, or later rebuilt
from cell buffers of another size, would sum forces in another order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mdengine import __version__, distributed
from mdengine.config import InputError, InputSpec

log = logging.getLogger(__name__)

# Input sections that must match for a resumed run to continue the same trajectory.
FINGERPRINT_KEYS = ("system", "potential", "integrator", "velocities", "seed", "precision")
CORRUPT_SUFFIX = ".corrupt"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written."""


def fingerprint_sections(spec: InputSpec) -> dict:
    """The input sections a checkpoint must agree with, as plain JSON data."""
    data = spec.model_dump(mode="json")
    sections = {key: data[key] for key in FINGERPRINT_KEYS}
    sections["equilibration"] = data["run"]["equilibration"]
    sections["replicas"] = data["run"]["replicas"]
    return sections


def fingerprint(spec: InputSpec) -> str:
    """SHA-256 of the canonical JSON of :func:`fingerprint_sections`."""
    text = json.dumps(fingerprint_sections(spec), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def differences(old, new, prefix="") -> list[str]:
    """Key paths where two nested JSON structures differ, as ``key: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else str(key)
            found += differences(old.get(key), new.get(key), path)
        return found
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


class Checkpointer:
    """Save and restore checkpoints in one folder, keeping the newest ``keep``."""

    def __init__(self, directory: Path, keep: int = 3):
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               cleanup_tmp_directories=True,
                                               enable_async_checkpointing=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "metadata"))
        self.last_saved_step: int | None = None
        self.last_saved_time = time.monotonic()

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, neighbor, metadata: dict) -> None:
        """Start writing a checkpoint in the background (the arrays are copied first).

        Raises:
          CheckpointError: this or an earlier background write failed.
        """
        tree = {"md": state}
        # Orbax cannot store empty arrays; an empty list is rebuilt identically on restore.
        has_neighbors = neighbor.idx.size > 0
        if has_neighbors:
            tree["neighbor_idx"] = neighbor.idx
            tree["neighbor_reference"] = neighbor.reference_position
        record = dict(metadata, step=int(step), neighbor_capacity=int(neighbor.max_occupancy),
                      cell_list_capacity=neighbor.cell_list_capacity,
                      neighbor_saved=bool(has_neighbors),
                      mdengine_version=__version__, saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        try:
            self._manager.check_for_errors()
            self._manager.save(int(step), args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), metadata=ocp.args.JsonSave(record)))
        except Exception as err:   # orbax raises OSError, ValueError and its own types
            raise CheckpointError(f"writing the checkpoint of step {step} in {self.directory} "
                                  f"failed: {err}") from err
        self.last_saved_step = int(step)
        self.last_saved_time = time.monotonic()
        log.info("checkpoint of step %d started in %s", step, self.directory)

    def check(self) -> None:
        """Raise CheckpointError if a background write has failed since the last check."""
        try:
            self._manager.check_for_errors()
        except Exception as err:
            raise CheckpointError(f"writing a checkpoint in {self.directory} failed: {err}") from err

    def wait(self) -> None:
        """Block until background writes finish; raise CheckpointError if one failed."""
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as err:
            raise CheckpointError(f"writing a checkpoint in {self.directory} failed: {err}") from err

    def read_metadata(self, step: int) -> dict:
        return self._manager.restore(step, args=ocp.args.Composite(
            metadata=ocp.args.JsonRestore())).metadata

    def restore(self, step: int, state_template, dtype) -> tuple[object, dict, dict]:
        """Restore one checkpoint into the structure of ``state_template``.

        Returns ``(state, neighbor arrays or None for an empty list, metadata)``.
        """
        metadata = self.read_metadata(step)
        capacity = metadata["neighbor_capacity"]
        idx_shape = tuple(metadata["neighbor_idx_shape"])
        sharding = getattr(state_template.position, "sharding", None)
        template = {"md": state_template}
        if metadata["neighbor_saved"]:
            template["neighbor_idx"] = jax.ShapeDtypeStruct(idx_shape, jnp.int32, sharding=sharding)
            template["neighbor_reference"] = jax.ShapeDtypeStruct(state_template.position.shape, dtype,
                                                                  sharding=sharding)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(template), metadata=ocp.args.JsonRestore()))
        tree = restored.state
        neighbor = None
        if metadata["neighbor_saved"]:
            neighbor = {"idx": tree["neighbor_idx"], "reference_position": tree["neighbor_reference"],
                        "capacity": capacity, "cell_list_capacity": metadata["cell_list_capacity"]}
        return tree["md"], neighbor, metadata

    def restore_latest(self, state_template_fn, dtype):
        """Restore the newest checkpoint that reads back completely.

        A checkpoint that fails to restore is reported, moved aside (its folder
        gets a ``.corrupt`` suffix in a sibling folder) and the previous one is
        tried. Returns ``(state, neighbor arrays, metadata)`` or ``None``.
        """
        for step in reversed(self.steps()):
            try:
                metadata = self.read_metadata(step)
                template = state_template_fn(metadata)
            except InputError:
                raise   # a readable checkpoint of another input: refused, never moved aside
            except Exception as err:   # a damaged checkpoint can fail in many ways
                self._report_unreadable(step, err)
                continue
            try:
                return self.restore(step, template, dtype)
            except Exception as err:
                self._report_unreadable(step, err)
        return None

    def _report_unreadable(self, step: int, err: Exception) -> None:
        log.error("checkpoint of step %d in %s cannot be read (%s: %s); trying the previous one",
                  step, self.directory, type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        self._quarantine(step)

    def _quarantine(self, step: int) -> None:
        source = self.directory / str(step)
        target_dir = self.directory.parent / (self.directory.name + CORRUPT_SUFFIX)
        target = target_dir / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        if distributed.is_primary():
            target_dir.mkdir(exist_ok=True)
            shutil.move(str(source), str(target))
            log.warning("moved the unreadable checkpoint to %s", target)
        distributed.barrier(f"quarantine-{step}")
        self._manager.reload()

    def close(self) -> None:
        self.wait()
        self._manager.close()


def find_checkpoint_dir(path: Path) -> tuple[Path, int | None]:
    """Resolve an output directory, checkpoint folder or single checkpoint to
    ``(checkpoint folder, step or None for the newest)``."""
    path = Path(path)
    if (path / "metadata").is_dir() and path.name.isdigit():
        return path.parent, int(path.name)
    if (path / "input.resolved.yaml").is_file():
        import yaml
        resolved = yaml.safe_load((path / "input.resolved.yaml").read_text())
        checkpoint = (resolved.get("output") or {}).get("checkpoint") or {}
        return path / checkpoint.get("directory", "checkpoints"), None
    return path, None


def inspect_checkpoint(path: Path) -> dict:
    """Read a checkpoint's record without restoring its arrays.

    Raises:
      InputError: no checkpoint found at ``path``.
    """
    directory, step = find_checkpoint_dir(path)
    if not directory.is_dir():
        raise InputError(f"{path}: no checkpoint folder found (expected a run's output directory, "
                         "its checkpoints folder, or one checkpoint)")
    manager = ocp.CheckpointManager(directory.resolve(), item_names=("state", "metadata"),
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    steps = sorted(manager.all_steps())
    if not steps:
        raise InputError(f"{directory}: contains no complete checkpoint")
    step = steps[-1] if step is None else step
    metadata = manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())).metadata
    metadata["path"] = str(directory / str(step))
    metadata["available_steps"] = steps
    return metadata
