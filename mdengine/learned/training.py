"""Training a learned potential from a YAML configuration.

Configuration (every relative path resolves from the configuration file's
folder, except ``output``, which resolves from the working directory as
the engine's ``output.directory`` does)::

    dataset: water.extxyz          # .xyz/.extxyz (ASE) or .npz, see mdengine.learned.data
    model: {architecture: schnet, features: 64, interactions: 3,
            radial_functions: 32, cutoff_A: 5.0}
           # or {architecture: equivariant, features: 32, max_degree: 2,
           #     interactions: 3, radial_functions: 16, cutoff_A: 5.0}
    training:
      epochs: 100
      batch_size: 8
      learning_rate: 1.0e-3        # Adam, cosine-decayed to learning_rate × final_learning_rate_fraction
      final_learning_rate_fraction: 0.05
      max_gradient_norm: 10.0      # clip the global gradient norm
      energy_weight: 1.0           # weight of ((E_pred − E) / n_atoms)², eV²/atom²
      force_weight: 10.0           # weight of the mean squared force component error, eV²/Å²
      patience: 20                 # stop after this many epochs without a better validation loss
      seed: 0                      # split, shuffling and initial parameters
      validation_fraction: 0.1
      test_fraction: 0.1
      precision: float32           # or float64
    output: models/water-schnet    # model directory to write

The best parameters on the validation split are kept. The model directory
receives ``model.json``, ``params/`` and ``metrics.json`` (test-split
errors: energy MAE/RMSE in meV/atom, force MAE/RMSE in meV/Å, the
training time and the per-epoch losses).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mdengine.config import InputError, format_validation_error
from mdengine.learned import architectures
from mdengine.learned.data import (batch_capacity, fit_shift_scale, iterate_batches, make_graphs,
                                   read_dataset, species_list, split_dataset)
from mdengine.learned.evaluate import make_predict_fn, metrics_of, predict_structures
from mdengine.learned.model_io import new_model, save_model

log = logging.getLogger(__name__)

METRICS_JSON = "metrics.json"
Fraction = Annotated[float, Field(gt=0, lt=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingSpec(Strict):
    """Optimisation settings."""

    epochs: int = Field(100, gt=0)
    batch_size: int = Field(8, gt=0, description="Structures per batch.")
    learning_rate: float = Field(1e-3, gt=0, description="Initial Adam learning rate.")
    final_learning_rate_fraction: float = Field(
        0.05, gt=0, le=1, description="Cosine decay ends at learning_rate times this.")
    max_gradient_norm: float = Field(10.0, gt=0, description="Global gradient-norm clip.")
    energy_weight: float = Field(1.0, ge=0, description="Weight of the per-atom energy error (1/eV²).")
    force_weight: float = Field(10.0, ge=0, description="Weight of the force error (Å²/eV²).")
    patience: int = Field(20, gt=0, description="Epochs without validation improvement before stopping.")
    seed: int = Field(0, ge=0)
    validation_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.1
    precision: Literal["float32", "float64"] = "float32"


class TrainConfig(Strict):
    """A training configuration file."""

    dataset: str = Field(description="Dataset file, relative to the configuration file.")
    model: architectures.ModelSpec
    training: TrainingSpec = TrainingSpec()
    output: str = Field(description="Model directory to write, relative to the working directory.")


@dataclasses.dataclass
class TrainResult:
    """Outputs of a training run: the model directory, test metrics and per-epoch history."""

    model_dir: Path
    metrics: dict
    history: list[dict]


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a training configuration (YAML).

    Raises:
      InputError: unreadable file, invalid YAML, or a failed validation.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise InputError(f"{path}: cannot read training configuration: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping with dataset, model, training and output")
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise InputError(format_validation_error(str(path), err).replace("\n", "; ")) from None


def train_from_file(path: str | Path) -> TrainResult:
    """Train from the configuration file at ``path``."""
    path = Path(path)
    return train(load_train_config(path), path.parent)


def train(config: TrainConfig, base_dir: Path) -> TrainResult:
    """Train a model, write its directory and ``metrics.json``; see the module docstring."""
    settings = config.training
    jax.config.update("jax_enable_x64", settings.precision == "float64")
    jax.config.update("jax_default_matmul_precision", "highest")
    dtype = np.float64 if settings.precision == "float64" else np.float32
    dataset_path = Path(base_dir) / config.dataset
    structures = read_dataset(dataset_path)
    train_set, val_set, test_set = split_dataset(structures, settings.validation_fraction,
                                                 settings.test_fraction, settings.seed)
    species = species_list(structures)
    shift, scale = fit_shift_scale(train_set, species)
    log.info("dataset %s: %d train, %d validation, %d test structures; species %s",
             dataset_path, len(train_set), len(val_set), len(test_set), ", ".join(species))

    cutoff = config.model.cutoff_A
    splits = {name: make_graphs(part, species, cutoff)
              for name, part in (("train", train_set), ("validation", val_set), ("test", test_set))}
    capacity = batch_capacity(splits["train"] + splits["validation"] + splits["test"],
                              settings.batch_size)
    module = architectures.build_module(config.model, len(species))
    params = architectures.init_params(module, len(species), settings.seed, dtype)
    normalisation = (jnp.asarray(shift, dtype), jnp.asarray(scale, dtype))

    predict = jax.jit(make_predict_fn(module, cutoff))
    begin = time.perf_counter()
    best_params, history = _fit(predict, params, normalisation, splits, capacity, settings, dtype)
    train_time = time.perf_counter() - begin

    test = metrics_of(predict_structures(predict, best_params, *normalisation, splits["test"],
                                         settings.batch_size, capacity, dtype))
    metrics = {"split": "test", **test, "training_time_s": train_time, "epochs_run": len(history),
               "best_epoch": min(history, key=lambda h: h["validation_loss"])["epoch"],
               "structures": {"train": len(train_set), "validation": len(val_set),
                              "test": len(test_set)}, "history": history}
    metadata = {"dataset": str(dataset_path.resolve()), "config": config.model_dump(mode="json"),
                "test_metrics": test, "training_time_s": train_time, "epochs_run": len(history)}
    model = new_model(config.model, species, shift, scale, params=best_params, training=metadata)
    model_dir = save_model(Path(config.output), model)
    (model_dir / METRICS_JSON).write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("wrote %s: test energy MAE %.3f meV/atom, force MAE %.3f meV/Å (%.1f s)", model_dir,
             test["energy_mae_meV_per_atom"], test["force_mae_meV_per_A"], train_time)
    return TrainResult(model_dir, metrics, history)


def make_optimizer(settings: TrainingSpec, steps_per_epoch: int):
    """Adam with cosine learning-rate decay and global gradient-norm clipping."""
    schedule = optax.cosine_decay_schedule(settings.learning_rate,
                                           decay_steps=max(1, settings.epochs * steps_per_epoch),
                                           alpha=settings.final_learning_rate_fraction)
    return optax.chain(optax.clip_by_global_norm(settings.max_gradient_norm),
                       optax.adam(schedule))


def make_loss_fn(predict, settings: TrainingSpec):
    """``loss(params, shift, scale, batch) -> (loss, (energies, forces))``; padding is excluded."""

    def loss_fn(params, shift, scale, batch):
        energies, forces = predict(params, shift, scale, batch)
        n_atoms = jnp.maximum(batch.n_atoms, 1)
        energy_error = jnp.where(batch.graph_mask, (energies - batch.energy) / n_atoms, 0.0)
        energy_term = jnp.sum(energy_error**2) / jnp.maximum(jnp.sum(batch.graph_mask), 1)
        force_error = jnp.where(batch.atom_mask[:, None], forces - batch.forces, 0.0)
        force_term = jnp.sum(force_error**2) / jnp.maximum(3 * jnp.sum(batch.atom_mask), 1)
        loss = settings.energy_weight * energy_term + settings.force_weight * force_term
        return loss, (energies, forces)

    return loss_fn


def _fit(predict, params, normalisation, splits, capacity, settings: TrainingSpec, dtype):
    """Run the epochs with early stopping; returns the best parameters and the history."""
    loss_fn = make_loss_fn(predict, settings)
    steps_per_epoch = -(-len(splits["train"]) // settings.batch_size)
    optimizer = make_optimizer(settings, steps_per_epoch)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *normalisation, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(settings.seed)
    best_params, best_loss, history = params, np.inf, []
    for epoch in range(1, settings.epochs + 1):
        losses = []
        for batch in iterate_batches(splits["train"], settings.batch_size, capacity, rng, dtype):
            params, opt_state, loss = step(params, opt_state, batch)
            losses.append(float(loss))
        predictions = predict_structures(predict, params, *normalisation, splits["validation"],
                                         settings.batch_size, capacity, dtype)
        record = _epoch_record(epoch, float(np.mean(losses)), predictions, settings)
        history.append(record)
        if record["validation_loss"] < best_loss:
            best_params, best_loss = params, record["validation_loss"]
        elif epoch - min(history, key=lambda h: h["validation_loss"])["epoch"] >= settings.patience:
            log.info("early stop after epoch %d: no better validation loss for %d epochs", epoch,
                     settings.patience)
            break
    return best_params, history


def loss_of(predictions: dict, settings: TrainingSpec) -> float:
    """Compute the training loss over whole-split predictions (see :func:`predict_structures`)."""
    energy_error = (predictions["pred_energy"] - predictions["energy"]) / predictions["n_atoms"]
    force_error = predictions["pred_forces"] - predictions["forces"]
    return float(settings.energy_weight * np.mean(energy_error**2)
                 + settings.force_weight * np.mean(force_error**2))


def _epoch_record(epoch: int, train_loss: float, predictions: dict, settings) -> dict:
    """Validation loss and errors of one epoch, logged and returned as a record."""
    errors = metrics_of(predictions)
    val_loss = loss_of(predictions, settings)
    log.info("epoch %d: train loss %.5g, validation loss %.5g, energy MAE %.3f meV/atom, "
             "force MAE %.3f meV/Å", epoch, train_loss, val_loss,
             errors["energy_mae_meV_per_atom"], errors["force_mae_meV_per_A"])
    return {"epoch": epoch, "train_loss": train_loss, "validation_loss": val_loss,
            "validation_energy_mae_meV_per_atom": errors["energy_mae_meV_per_atom"],
            "validation_force_mae_meV_per_A": errors["force_mae_meV_per_A"]}
