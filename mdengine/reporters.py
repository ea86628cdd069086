"""Output writers: trajectory (through mdtraj), thermodynamic CSV and progress.

Each trajectory format has its own on-disk units, and mdtraj's writers take
them directly. DCD and AMBER NetCDF store Å, XTC and HDF5 store nm, and the
conversion from Å happens here and nowhere else.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np

from mdengine.units import NM_PER_ANGSTROM

log = logging.getLogger(__name__)

THERMO_COLUMNS = ("step", "time_ps", "phase", "potential_energy_eV", "kinetic_energy_eV",
                  "total_energy_eV", "conserved_energy_eV", "temperature_K")


def cell_lengths_angles(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge lengths (Å) and angles α, β, γ (degrees) of lattice vectors given as rows."""
    a, b, c = cell
    lengths = np.array([np.linalg.norm(a), np.linalg.norm(b), np.linalg.norm(c)])

    def angle(u, v):
        return np.degrees(np.arccos(np.clip(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1)))

    return lengths, np.array([angle(b, c), angle(a, c), angle(a, b)])


class TrajectoryWriter:
    """Append frames of Cartesian positions (Å) to a DCD, XTC, HDF5 or NetCDF file.

    A PDB of the topology and first frame is written beside DCD, XTC and
    NetCDF files, since those formats store no atom names or elements.
    """

    def __init__(self, path: Path, topology: mdtraj.Topology, cell: np.ndarray | None,
                 timestep_ps: float, keep_frames: int | None = None):
        """Create the file, or with ``keep_frames`` keep that many frames of an
        existing one and append after them."""
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        self.topology = topology
        self.timestep_ps = timestep_ps
        self.frames_written = 0
        self.lengths_A, self.angles = (None, None) if cell is None else cell_lengths_angles(cell)
        self.cell = cell
        if keep_frames:
            self._file = self._rewrite_prefix(keep_frames)
            self.frames_written = keep_frames
        else:
            self._file = self._open_new(self.path)

    def _open_new(self, path: Path):
        handle = mdtraj.open(str(path), "w")
        if self.suffix == ".h5":
            handle.topology = self.topology
        return handle

    def _rewrite_prefix(self, n_frames: int):
        """Copy the first ``n_frames`` frames, in the file's own units and bit for bit,
        into a new file that then replaces the old one; returns it open for appending.

        DCD cannot be appended to in place, so every format takes this path.
        NOTE: the copy costs time proportional to the trajectory kept.
        """
        from mdengine.config import InputError
        if not self.path.is_file():
            raise InputError(f"{self.path}: missing, but the checkpoint records {n_frames} frames in it")
        with mdtraj.open(str(self.path), "r") as old:
            data = old.read(n_frames=n_frames)
        coordinates = data.coordinates if self.suffix == ".h5" else data[0]
        if len(coordinates) < n_frames:
            raise InputError(f"{self.path}: has {len(coordinates)} frames, fewer than the {n_frames} "
                             "the checkpoint records; the file was truncated or replaced")
        temporary = self.path.with_name(self.path.stem + ".partial" + self.path.suffix)
        new = self._open_new(temporary)
        if self.suffix == ".dcd":
            new.write(coordinates, cell_lengths=data[1], cell_angles=data[2])
        elif self.suffix == ".xtc":
            new.write(coordinates, time=data[1], step=data[2], box=data[3])
        elif self.suffix == ".nc":
            new.write(coordinates, time=data[1], cell_lengths=data[2], cell_angles=data[3])
        else:
            new.write(coordinates, time=data.time, cell_lengths=data.cell_lengths,
                      cell_angles=data.cell_angles)
        flush = getattr(new, "flush", None)
        if flush is not None:
            flush()
        os.replace(temporary, self.path)
        log.info("trajectory %s cut back to the %d frames of the checkpoint", self.path, n_frames)
        return new

    @property
    def topology_path(self) -> Path | None:
        return None if self.suffix == ".h5" else self.path.with_suffix(".topology.pdb")

    def write(self, steps: np.ndarray, positions_A: np.ndarray) -> None:
        """Append ``positions_A`` (``[F, N, 3]``, Å) recorded at ``steps`` (``[F]``)."""
        if len(steps) == 0:
            return
        positions_A = np.asarray(positions_A, dtype=np.float32)
        if self.frames_written == 0 and self.topology_path is not None:
            self._write_topology_pdb(positions_A[0])
        n = len(steps)
        times_ps = np.asarray(steps, dtype=np.float64) * self.timestep_ps
        lengths = None if self.lengths_A is None else np.tile(self.lengths_A, (n, 1))
        angles = None if self.angles is None else np.tile(self.angles, (n, 1))

        if self.suffix == ".dcd":
            self._file.write(positions_A, cell_lengths=lengths, cell_angles=angles)
        elif self.suffix == ".nc":
            self._file.write(positions_A, time=times_ps, cell_lengths=lengths, cell_angles=angles)
        elif self.suffix == ".xtc":
            box = None if self.cell is None else np.tile(self.cell * NM_PER_ANGSTROM, (n, 1, 1))
            self._file.write(positions_A * NM_PER_ANGSTROM, time=times_ps.astype(np.float32),
                             step=np.asarray(steps, dtype=np.int32), box=box)
        elif self.suffix == ".h5":
            self._file.write(positions_A * NM_PER_ANGSTROM, time=times_ps,
                             cell_lengths=None if lengths is None else lengths * NM_PER_ANGSTROM,
                             cell_angles=angles)
        self.frames_written += n
        self._flush()

    def _flush(self):
        flush = getattr(self._file, "flush", None)
        if flush is not None:
            flush()

    def _write_topology_pdb(self, positions_A: np.ndarray) -> None:
        frame = mdtraj.Trajectory(positions_A[None] * NM_PER_ANGSTROM, self.topology)
        if self.cell is not None:
            frame.unitcell_vectors = (self.cell * NM_PER_ANGSTROM)[None].astype(np.float32)
        frame.save_pdb(str(self.topology_path))

    def close(self) -> None:
        self._file.close()


def thermo_columns(replicas: bool) -> tuple[str, ...]:
    """Column names of the thermo CSV, with a ``replica`` column for replica runs."""
    if not replicas:
        return THERMO_COLUMNS
    return THERMO_COLUMNS[:1] + ("replica",) + THERMO_COLUMNS[1:]


class ThermoWriter:
    """Thermodynamic samples as CSV with units in every column name, flushed per chunk."""

    def __init__(self, path: Path, keep_rows: int | None = None, replicas: bool = False):
        """Create the file, or with ``keep_rows`` cut an existing one back to its
        header and that many rows and append after them. With ``replicas``, a
        ``replica`` column follows the step."""
        self.path = Path(path)
        self.rows_written = 0
        if keep_rows is None:
            self._handle = self.path.open("w", newline="")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(thermo_columns(replicas))
            return
        self._truncate(keep_rows)
        self._handle = self.path.open("a", newline="")
        self._writer = csv.writer(self._handle)
        self.rows_written = keep_rows

    def _truncate(self, keep_rows: int) -> None:
        from mdengine.config import InputError
        if not self.path.is_file():
            raise InputError(f"{self.path}: missing, but the checkpoint records {keep_rows} rows in it")
        with self.path.open("rb+") as handle:
            lines = handle.readlines()
            if len(lines) < keep_rows + 1:
                raise InputError(f"{self.path}: has {len(lines) - 1} rows, fewer than the {keep_rows} "
                                 "the checkpoint records; the file was truncated or replaced")
            handle.truncate(sum(len(line) for line in lines[:keep_rows + 1]))

    def write(self, rows: list[tuple]) -> None:
        for row in rows:
            self._writer.writerow(_format_row(row))
        self.rows_written += len(rows)
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class DiscardWriter:
    """Counts frames or rows without writing them: the writers of processes other
    than process 0 in a multi-process run, which keep the same counts."""

    def __init__(self, path: Path, topology_path: Path | None = None, keep: int | None = None):
        self.path = Path(path)
        self.topology_path = topology_path
        self.frames_written = self.rows_written = keep or 0

    def write(self, entries, *_) -> None:
        """Count ``len(entries)`` frames (steps) or thermo rows."""
        self.frames_written += len(entries)
        self.rows_written += len(entries)

    def close(self) -> None:
        pass


def _format_row(row):
    return [f"{v:.10g}" if isinstance(v, float) else v for v in row]


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """Steps done, steps/s, ns/day and ETA: a bar on a terminal, log lines otherwise."""

    def __init__(self, total_steps: int, timestep_fs: float, interval_s: float, stream=None):
        self.total = max(total_steps, 1)
        self.timestep_fs = timestep_fs
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.is_terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start_time = time.perf_counter()
        self.start_step = 0
        self.last_report = 0.0
        self.last_step = None

    def restart_clock(self, step: int) -> None:
        """Measure rates from ``step`` on (call after compilation)."""
        self.start_time = time.perf_counter()
        self.start_step = step

    def update(self, step: int, force: bool = False) -> None:
        now = time.perf_counter()
        if step == self.last_step:
            return
        if not force and now - self.last_report < (0.2 if self.is_terminal else self.interval_s):
            return
        self.last_step = step
        self.last_report = now
        elapsed = max(now - self.start_time, 1e-9)
        rate = (step - self.start_step) / elapsed
        ns_per_day = rate * self.timestep_fs * 86400 / 1e6
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        eta_text = format_duration(eta) if np.isfinite(eta) else "--:--"
        text = (f"{step}/{self.total} steps  {rate:,.1f} steps/s  {ns_per_day:.3g} ns/day  "
                f"ETA {eta_text}")
        if self.is_terminal:
            width = 30
            filled = int(width * step / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}   ")
            self.stream.flush()
        else:
            log.info("progress: %s", text)

    def finish(self) -> None:
        if self.is_terminal:
            self.stream.write("\n")
            self.stream.flush()
