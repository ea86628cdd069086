"""Input-file schema and loader.

An input file is YAML, read with ``yaml.safe_load`` (no Python objects can
be constructed from it). Every model below is frozen and rejects unknown
keys, so a typo is an error rather than a silently ignored setting. Each key
carries its unit in its name (``_A`` for Å, ``_fs``, ``_K``, ``_eV``,
``_amu``, ``_per_ps``).

The only code an input can cause to run is a ``custom`` potential, which
names its function explicitly as ``package.module:function``.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]

TRAJECTORY_EXTENSIONS = (".dcd", ".xtc", ".h5", ".nc")
STRUCTURE_EXTENSIONS = (".pdb", ".gro", ".xyz", ".extxyz")


class InputError(ValueError):
    """An input file, or a file it names, is invalid. The message is one line."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- system


class LatticeSpec(Strict):
    """A generated crystal: ``repeats`` conventional cubic cells."""

    kind: Literal["fcc", "bcc", "diamond", "sc"]
    element: str
    lattice_constant_A: PositiveFloat
    repeats: tuple[PositiveInt, PositiveInt, PositiveInt]
    displacement_A: NonNegativeFloat = Field(
        0.0, description="Maximum random displacement per coordinate (Å), seeded by `seed`.")


class SystemSpec(Strict):
    """Atoms, box and masses. Exactly one of ``structure`` and ``lattice``."""

    structure: str | None = Field(
        None, description="Structure file (.pdb, .gro, .xyz, .extxyz), relative to the input file.")
    lattice: LatticeSpec | None = None
    box_A: (tuple[PositiveFloat, PositiveFloat, PositiveFloat]
            | tuple[tuple[float, float, float], tuple[float, float, float],
                    tuple[float, float, float]]
            | None) = Field(
        None, description="Box edge lengths (Å) or 3x3 lattice vectors as rows (Å); "
                          "overrides the box of the structure file.")
    periodic: bool = Field(True, description="false for free (non-periodic) boundaries.")
    replica_frames: bool = Field(
        False, description="With run.replicas R > 1, replica r starts from frame r + 1 of the "
                           "structure file; every frame needs the same atoms and cell.")
    masses_amu: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="Per-element mass overrides (amu).")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.structure is None) == (self.lattice is None):
            raise ValueError("give exactly one of 'structure' and 'lattice'")
        if self.replica_frames and self.structure is None:
            raise ValueError("replica_frames needs a multi-frame 'structure' file")
        if self.structure is not None and not self.structure.lower().endswith(STRUCTURE_EXTENSIONS):
            raise ValueError(f"structure file {self.structure!r} has an unsupported extension; "
                             f"use one of {', '.join(STRUCTURE_EXTENSIONS)}")
        return self


# ---------------------------------------------------------------- potentials


class LJParams(Strict):
    epsilon_eV: PositiveFloat
    sigma_A: PositiveFloat


class MorseParams(Strict):
    D_eV: PositiveFloat = Field(description="Well depth (eV).")
    alpha_per_A: PositiveFloat = Field(description="Width parameter (1/Å).")
    r0_A: PositiveFloat = Field(description="Equilibrium distance (Å).")


class SoftSphereParams(Strict):
    epsilon_eV: PositiveFloat
    sigma_A: PositiveFloat = Field(description="Contact diameter (Å); the pair energy is zero beyond it.")


class LennardJonesPotential(Strict):
    """4ε[(σ/r)^12 − (σ/r)^6], truncated at ``cutoff_A``; unlike species use
    Lorentz–Berthelot mixing unless ``pairs`` gives them."""

    kind: Literal["lennard_jones"]
    cutoff_A: PositiveFloat
    shift_energy: bool = Field(True, description="Shift the pair energy to zero at the cutoff.")
    species: dict[str, LJParams]
    pairs: dict[str, LJParams] = Field(
        default_factory=dict, description="Explicit unlike-pair parameters, keyed 'A-B'.")


class MorsePotential(Strict):
    """D[(1 − e^{−α(r−r0)})² − 1], truncated at ``cutoff_A``; unlike species
    use arithmetic means of the per-species parameters unless ``pairs`` gives them."""

    kind: Literal["morse"]
    cutoff_A: PositiveFloat
    shift_energy: bool = True
    species: dict[str, MorseParams]
    pairs: dict[str, MorseParams] = Field(default_factory=dict)


class SoftSpherePotential(Strict):
    """(ε/α)(1 − r/σ)^α for r < σ; unlike species use σ_ij = (σ_i + σ_j)/2
    and ε_ij = sqrt(ε_i ε_j)."""

    kind: Literal["soft_sphere"]
    exponent: Annotated[float, Field(ge=2)] = Field(2.0, description="Exponent α (dimensionless, ≥ 2).")
    species: dict[str, SoftSphereParams]


class FilePotential(Strict):
    """A many-body potential read from a LAMMPS-format parameter file."""

    kind: Literal["stillinger_weber", "tersoff", "eam"]
    file: str = Field(description="LAMMPS parameter file (.sw, .tersoff, eam/alloy setfl), "
                                  "relative to the input file.")


class CustomPotential(Strict):
    """A user energy function, imported from ``package.module:function``."""

    kind: Literal["custom"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    cutoff_A: PositiveFloat
    neighbor_format: Literal["sparse", "ordered_sparse", "dense"] = "sparse"
    parameters: dict[str, float | int | str | bool | list[float]] = Field(
        default_factory=dict, description="Keyword arguments passed to the function.")
    search_path: list[str] = Field(
        default_factory=list, description="Extra folders, relative to the input file, "
                                          "prepended to sys.path for the import.")


class LearnedPotential(Strict):
    """A trained graph neural network stored as a model directory."""

    kind: Literal["learned"]
    model: str = Field(description="Model directory (orbax parameters and model.json), "
                                   "relative to the input file.")


Potential = Annotated[
    Union[LennardJonesPotential, MorsePotential, SoftSpherePotential,
          FilePotential, CustomPotential, LearnedPotential],
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------- integrators


class NoseHooverSpec(Strict):
    """Nosé–Hoover chain (Martyna, Tuckerman & Klein 1996)."""

    kind: Literal["nose_hoover"]
    tau_fs: PositiveFloat = Field(100.0, description="Thermostat period (fs).")
    chain_length: Annotated[int, Field(ge=1, le=10)] = 3
    chain_steps: Annotated[int, Field(ge=1, le=20)] = 2
    suzuki_yoshida_order: Literal[1, 3, 5, 7] = 3


class LangevinSpec(Strict):
    """Langevin dynamics with the BAOAB splitting (Leimkuhler & Matthews 2013)."""

    kind: Literal["langevin"]
    friction_per_ps: PositiveFloat = Field(1.0, description="Friction coefficient γ (1/ps).")


class CSVRSpec(Strict):
    """Canonical sampling through velocity rescaling (Bussi, Donadio & Parrinello 2007)."""

    kind: Literal["csvr"]
    tau_fs: PositiveFloat = Field(100.0, description="Relaxation time (fs).")


Thermostat = Annotated[Union[NoseHooverSpec, LangevinSpec, CSVRSpec], Field(discriminator="kind")]


class IntegratorSpec(Strict):
    ensemble: Literal["nve", "nvt"]
    timestep_fs: PositiveFloat = Field(description="Time step (fs).")
    temperature_K: PositiveFloat | None = Field(None, description="Target temperature for nvt (K).")
    thermostat: Thermostat | None = None

    @model_validator(mode="after")
    def _thermostat_matches_ensemble(self):
        return _check_thermostat(self, self.ensemble)


class EquilibrationSpec(Strict):
    """An NVT phase run before the main phase, with the same time step."""

    steps: PositiveInt
    temperature_K: PositiveFloat
    thermostat: Thermostat

    @model_validator(mode="after")
    def _valid(self):
        return _check_thermostat(self, "nvt")


def _check_thermostat(spec, ensemble):
    if ensemble == "nvt":
        if spec.thermostat is None:
            raise ValueError("ensemble 'nvt' needs a 'thermostat' "
                             "(kind: nose_hoover, langevin or csvr)")
        if spec.temperature_K is None:
            raise ValueError("ensemble 'nvt' needs 'temperature_K'")
    elif spec.thermostat is not None:
        raise ValueError("ensemble 'nve' takes no 'thermostat'; use ensemble: nvt")
    return spec


class VelocitySpec(Strict):
    source: Literal["maxwell_boltzmann", "structure", "zero"] = "maxwell_boltzmann"
    temperature_K: NonNegativeFloat | None = Field(
        None, description="Temperature of the Maxwell–Boltzmann draw (K); defaults to the "
                          "first phase's target temperature.")


# ---------------------------------------------------------------- the rest


class NeighborSpec(Strict):
    skin_A: NonNegativeFloat = Field(1.0, description="Verlet skin (Å); the list is rebuilt when "
                                                      "an atom has moved more than half of it.")
    capacity_multiplier: Annotated[float, Field(ge=1.0, le=10.0)] = 1.25


class RunSpec(Strict):
    steps: Annotated[int, Field(ge=0)] = Field(description="Steps of the main phase.")
    chunk_steps: PositiveInt | None = Field(
        None, description="Steps per compiled chunk; default: about 500, a multiple of the strides.")
    equilibration: EquilibrationSpec | None = None
    replicas: PositiveInt = Field(
        1, description="Independent copies of the system run together in one vmapped step; "
                        "replica r draws its velocities and thermostat noise from seed + r.")


class CheckpointSpec(Strict):
    """Orbax checkpoints of the full state, written at chunk ends and when the run ends."""

    directory: str = Field("checkpoints", description="Folder inside the output directory.")
    interval_steps: PositiveInt | None = Field(
        None, description="Write a checkpoint every this many steps (chunks end on these steps).")
    interval_minutes: PositiveFloat | None = Field(
        15.0, description="Write a checkpoint when this much wall time (minutes) has passed "
                          "since the last one; whichever of the two intervals comes first.")
    keep: Annotated[int, Field(ge=1)] = Field(3, description="Number of newest checkpoints kept.")


class OutputSpec(Strict):
    directory: str = Field("run", description="Output directory, relative to the working directory.")
    trajectory: str | None = Field("trajectory.dcd", description="Trajectory file in the output "
                                                                  "directory (.dcd .xtc .h5 .nc); null for none.")
    frame_stride: PositiveInt = 100
    wrap_positions: bool = Field(
        False, description="Write positions folded into the cell; by default they are continuous "
                           "(unwrapped), so molecules stay whole and displacements are correct.")
    thermo: str = "thermo.csv"
    thermo_stride: PositiveInt = 10
    log_interval_s: PositiveFloat = Field(10.0, description="Seconds between progress log lines "
                                                            "when the output is not a terminal.")
    checkpoint: CheckpointSpec | None = Field(
        CheckpointSpec(), description="Checkpoint settings; null disables checkpoints.")

    @field_validator("trajectory")
    @classmethod
    def _trajectory_extension(cls, value):
        if value is not None and not value.lower().endswith(TRAJECTORY_EXTENSIONS):
            raise ValueError(f"trajectory {value!r} has an unsupported extension; "
                             f"use one of {', '.join(TRAJECTORY_EXTENSIONS)}")
        return value


class InputSpec(Strict):
    system: SystemSpec
    potential: Potential
    integrator: IntegratorSpec
    velocities: VelocitySpec = VelocitySpec()
    neighbor: NeighborSpec = NeighborSpec()
    run: RunSpec
    output: OutputSpec = OutputSpec()
    seed: Annotated[int, Field(ge=0)] = 0
    precision: Literal["float32", "float64"] = "float32"

    @model_validator(mode="after")
    def _initial_temperature(self):
        if self.velocities.source == "maxwell_boltzmann" and self.initial_temperature_K() is None:
            raise ValueError("velocities: maxwell_boltzmann needs velocities.temperature_K "
                             "when the first phase is nve")
        return self

    def initial_temperature_K(self) -> float | None:
        """Temperature of the initial velocity draw (K)."""
        if self.velocities.temperature_K is not None:
            return self.velocities.temperature_K
        if self.run.equilibration is not None:
            return self.run.equilibration.temperature_K
        return self.integrator.temperature_K

    def timestep_fs(self) -> float:
        return self.integrator.timestep_fs


# ---------------------------------------------------------------- loading


# Discriminated unions add the chosen ``kind`` to an error's location; the
# key path a user writes does not contain it.
_UNION_TAGS = {"lennard_jones", "morse", "soft_sphere", "stillinger_weber", "tersoff", "eam",
               "custom", "learned", "nose_hoover", "langevin", "csvr"}


def _format_location(loc) -> str:
    parts = [str(part) for part in loc]
    return ".".join(part for part in parts
                    if part not in _UNION_TAGS and not part.startswith(("function-", "tagged-")))


def _known_keys() -> set[str]:
    names = set()
    for model in Strict.__subclasses__():
        names.update(model.model_fields)
    return names


def format_validation_error(path: str, error: ValidationError) -> str:
    """Format each problem as one line: ``FILE: key.path: message (got VALUE)``.

    Unknown keys come first, since a misspelt key also makes the intended
    one look missing.
    """
    unknown, others = [], []
    for item in error.errors():
        key = _format_location(item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            name = str(item["loc"][-1])
            close = difflib.get_close_matches(name, _known_keys(), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "check its spelling against the README"
            unknown.append(f"{path}: {key}: unknown key; {hint}")
            continue
        allowed = item.get("ctx", {}).get("expected")
        suffix = f"; allowed: {allowed}" if allowed and allowed not in message else ""
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        others.append(f"{path}: {key}: {message}{got_text}{suffix}")
    return "\n".join(unknown + others)


def load_input(path: str | Path, overrides: dict | None = None) -> InputSpec:
    """Read and validate an input file.

    Args:
      path: YAML input file.
      overrides: nested dict merged over the file's content before
        validation, e.g. ``{"run": {"steps": 100}}``.

    Raises:
      InputError: the file is missing, is not YAML, or fails validation.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"{path}: cannot read input file: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of sections (system, potential, ...) at the top level")
    if overrides:
        raw = _merge(raw, overrides)
    try:
        return InputSpec.model_validate(raw)
    except ValidationError as err:
        raise InputError(format_validation_error(str(path), err)) from None


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolved_yaml(spec: InputSpec) -> str:
    """Dump the input with every default filled in, as YAML."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def default_chunk_steps(spec: InputSpec) -> int:
    """Chunk length: the smallest multiple of both strides that is ≥ 500 steps,
    or the configured ``run.chunk_steps``. Shorter chunks report progress and
    honour Ctrl-C sooner; each costs about a millisecond of host work."""
    if spec.run.chunk_steps is not None:
        return spec.run.chunk_steps
    base = math.lcm(spec.output.frame_stride, spec.output.thermo_stride)
    return base * max(1, math.ceil(500 / base))
