"""Model directories: orbax parameters plus a ``model.json`` description.

Layout of a model directory::

    model.json    architecture and hyper-parameters, species, units,
                  per-species energy shift and scale, training metadata
    params/       network parameters, written by orbax-checkpoint's
                  StandardCheckpointer (no pickle anywhere)

Loading checks everything a run depends on: both parts present, the JSON
valid against :class:`ModelFile`, a known architecture, and parameters
whose tree and shapes are exactly those the architecture builds. Each
failure is an :class:`~mdengine.config.InputError` naming the directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mdengine.config import InputError
from mdengine.learned import architectures
from mdengine.learned.graph import dense_neighbor_edges, neighbor_edges
from mdengine.learned.schnet import SchNet, filter_tables

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"
PARAMS_DIR = "params"
FORMAT = "mdengine-learned-model"


class ModelFile(BaseModel):
    """The content of ``model.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["mdengine-learned-model"]
    format_version: Literal[1] = 1
    model: architectures.ModelSpec
    species: list[str] = Field(min_length=1, description="Element symbols, in the network's order.")
    energy_unit: Literal["eV"] = "eV"
    length_unit: Literal["Å"] = "Å"
    parameter_dtype: Literal["float32", "float64"] = "float32"
    energy_shift_eV: dict[str, float]
    energy_scale_eV: dict[str, float]
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _per_species(self):
        if len(set(self.species)) != len(self.species):
            raise ValueError(f"species {self.species} lists an element twice")
        for key in ("energy_shift_eV", "energy_scale_eV"):
            if set(getattr(self, key)) != set(self.species):
                raise ValueError(f"{key} must have one entry per species {self.species}, "
                                 f"got {sorted(getattr(self, key))}")
        return self

    @property
    def cutoff_A(self) -> float:
        return self.model.cutoff_A


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model read from (or about to be written to) a directory.

    Attributes:
      description: the validated ``model.json``.
      params: the network parameters (nested dict of arrays).
      path: the directory, or None for a model not yet saved.
    """

    description: ModelFile
    params: Any
    path: Path | None = None

    @property
    def species(self) -> list[str]:
        return list(self.description.species)

    @property
    def cutoff_A(self) -> float:
        return self.description.cutoff_A

    @property
    def module(self):
        return architectures.build_module(self.description.model, len(self.species))

    def shift_scale(self, dtype) -> tuple[jax.Array, jax.Array]:
        """``[S]`` energy shift and scale (eV) in the model's species order."""
        d = self.description
        shift = jnp.asarray([d.energy_shift_eV[s] for s in self.species], dtype)
        scale = jnp.asarray([d.energy_scale_eV[s] for s in self.species], dtype)
        return shift, scale

    def atomic_energy_fn(self, displacement_fn, dtype, tabulate_filters: bool = False,
                         dense: bool = False):
        """``fn(species [N] int32, positions [N, 3], idx) -> [N]`` per-atom energies (eV).

        ``positions`` are in the coordinates ``displacement_fn`` expects;
        ``idx`` is a jax-md sparse neighbor list's ``idx`` ``[2, C]``, or with
        ``dense`` a dense list's ``[N, K]`` (padding = N in both).
        Parameters are cast to ``dtype``. With ``tabulate_filters`` a SchNet
        evaluates its filter networks as tabulated splines
        (:mod:`mdengine.learned.filter_table`); the networks themselves are
        used otherwise.
        """
        module = self.module
        params = architectures.cast_params(self.params, dtype)
        shift, scale = self.shift_scale(dtype)
        cutoff = self.cutoff_A
        options = {}
        if tabulate_filters and isinstance(module, SchNet):
            options["tables"] = filter_tables(params, module.spec, dtype)

        def fn(species, positions, idx):
            edges = (dense_neighbor_edges if dense else neighbor_edges)(positions, idx, displacement_fn,
                                                                      cutoff)
            return architectures.atomic_energies(module, params, shift, scale, species, edges,
                                                 **options)

        return fn


def new_model(spec, species: list[str], shift_eV, scale_eV, params=None, seed: int = 0,
              training: dict | None = None) -> LoadedModel:
    """Create a model in memory, with random (seeded) parameters unless ``params`` is given.

    Args:
      spec: a SchNetSpec or EquivariantSpec.
      species: element symbols, in the order the network indexes them.
      shift_eV, scale_eV: ``[S]`` per-species energy shift and scale (eV).
    """
    if params is None:
        params = architectures.init_params(architectures.build_module(spec, len(species)),
                                           len(species), seed)
    dtype = str(np.asarray(jax.tree_util.tree_leaves(params)[0]).dtype)
    description = ModelFile(
        format=FORMAT, model=spec, species=list(species), parameter_dtype=dtype,
        energy_shift_eV={s: float(v) for s, v in zip(species, np.asarray(shift_eV))},
        energy_scale_eV={s: float(v) for s, v in zip(species, np.asarray(scale_eV))},
        training=training or {})
    return LoadedModel(description, params)


def save_model(path: str | Path, model: LoadedModel) -> Path:
    """Write ``model`` as a model directory at ``path`` (replacing one that is there)."""
    path = Path(path).resolve()
    path.mkdir(parents=True, exist_ok=True)
    params = jax.tree_util.tree_map(np.asarray, model.params)
    checkpointer = ocp.StandardCheckpointer()
    try:
        checkpointer.save(path / PARAMS_DIR, params, force=True)
        checkpointer.wait_until_finished()
    finally:
        checkpointer.close()
    text = json.dumps(model.description.model_dump(mode="json"), indent=2, ensure_ascii=False)
    (path / MODEL_JSON).write_text(text + "\n", encoding="utf-8")
    return path


def load_model(path: str | Path) -> LoadedModel:
    """Read a model directory.

    Raises:
      InputError: a missing or unreadable part, malformed or invalid JSON,
        an unknown architecture, or parameters that do not fit the architecture.
    """
    path = Path(path).resolve()
    if not path.is_dir():
        raise InputError(f"{path}: model directory not found; train one with 'mdengine train'")
    description = _read_description(path)
    params = _read_params(path, description)
    return LoadedModel(description, params, path)


def _read_description(path: Path) -> ModelFile:
    json_path = path / MODEL_JSON
    try:
        raw = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no {MODEL_JSON}; this is not a model directory") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{json_path}: cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{json_path}: malformed JSON at line {err.lineno} column {err.colno}: "
                         f"{err.msg}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{json_path}: expected a JSON object at the top level")
    try:
        return ModelFile.model_validate(raw)
    except ValidationError as err:
        raise InputError(f"{json_path}: {_describe(err)}") from None


def _describe(error: ValidationError) -> str:
    """Format the validation problems on one line."""
    parts = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"] if p not in architectures.ARCHITECTURES)
        if item["type"] == "union_tag_invalid":
            tag = item.get("ctx", {}).get("tag")
            parts.append(f"{key}: unknown architecture {tag!r}; "
                         f"known: {', '.join(architectures.ARCHITECTURES)}")
        elif item["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key")
        else:
            message = item["msg"].removeprefix("Value error, ")
            got = item.get("input")
            got_text = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            parts.append(f"{key or '(top level)'}: {message}{got_text}")
    return "; ".join(parts)


def _read_params(path: Path, description: ModelFile):
    params_path = path / PARAMS_DIR
    if not params_path.is_dir():
        raise InputError(f"{path}: no {PARAMS_DIR}/ folder of parameters; the model directory "
                         "is incomplete")
    checkpointer = ocp.StandardCheckpointer()
    try:
        stored = checkpointer.restore(params_path)
    except Exception as err:   # orbax raises FileNotFoundError, ValueError and its own types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{params_path}: cannot read parameters: {first}") from None
    finally:
        checkpointer.close()
    _check_shapes(params_path, description, stored)
    return jax.tree_util.tree_map(np.asarray, stored)


def _check_shapes(params_path: Path, description: ModelFile, stored) -> None:
    """Compare the stored tree with the one the architecture builds."""
    spec, count = description.model, len(description.species)
    module = architectures.build_module(spec, count)
    expected = jax.eval_shape(lambda: architectures.init_params(module, count, 0))
    flat_expected = {jax.tree_util.keystr(k): v.shape
                     for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    flat_stored = {jax.tree_util.keystr(k): np.shape(v)
                   for k, v in jax.tree_util.tree_leaves_with_path(stored)}
    where = f"{params_path}: parameters do not match {spec.architecture} with {count} species"
    missing = sorted(set(flat_expected) - set(flat_stored))
    extra = sorted(set(flat_stored) - set(flat_expected))
    if missing or extra:
        raise InputError(f"{where}: missing {missing[:3]}, unexpected {extra[:3]}; the "
                         "hyper-parameters in model.json differ from those it was trained with")
    for key, shape in flat_expected.items():
        if tuple(flat_stored[key]) != tuple(shape):
            raise InputError(f"{where}: {key} has shape {tuple(flat_stored[key])}, expected "
                             f"{tuple(shape)}; the hyper-parameters in model.json differ from "
                             "those it was trained with")
