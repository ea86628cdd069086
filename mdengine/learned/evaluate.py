"""Predictions and error metrics of a model on labelled structures, and parity plots."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mdengine.config import InputError
from mdengine.learned import architectures
from mdengine.learned.data import (GraphBatch, Structure, batch_capacity, iterate_batches,
                                   make_graphs)
from mdengine.learned.graph import make_edges


def make_predict_fn(module, cutoff_A: float):
    """``predict(params, shift [S], scale [S], batch) -> (energies [B] eV, forces [A, 3] eV/Å)``.

    Forces are −∂E/∂positions of the batch's total energy; the graphs of a
    batch are disjoint, so each atom's force comes from its own structure.
    """

    def batch_energy(positions, params, shift, scale, batch: GraphBatch):
        n_slots, n_graphs = positions.shape[0], batch.energy.shape[0]
        vectors = positions[batch.edge_src] + batch.edge_shift - positions[batch.edge_dst]
        edges = make_edges(vectors, batch.edge_dst, batch.edge_src, batch.edge_valid, n_slots,
                           cutoff_A)
        per_atom = architectures.atomic_energies(module, params, shift, scale, batch.species, edges)
        per_atom = jnp.where(batch.atom_mask, per_atom, 0.0)
        energies = jax.ops.segment_sum(per_atom, batch.atom_graph, num_segments=n_graphs)
        return jnp.sum(energies), energies

    def predict(params, shift, scale, batch: GraphBatch):
        grad_fn = jax.grad(batch_energy, has_aux=True)
        gradient, energies = grad_fn(batch.positions, params, shift, scale, batch)
        return energies, -gradient

    return predict


def error_metrics(pred_energy, ref_energy, n_atoms, pred_forces, ref_forces) -> dict:
    """Errors of real (unpadded) structures.

    Args:
      pred_energy, ref_energy: ``[M]`` total energies (eV).
      n_atoms: ``[M]`` atom counts.
      pred_forces, ref_forces: ``[K, 3]`` forces of all their atoms (eV/Å).

    Returns:
      energy MAE and RMSE per atom (meV/atom), force-component MAE and RMSE
      (meV/Å), and the counts.
    """
    per_atom = (np.asarray(pred_energy) - np.asarray(ref_energy)) / np.asarray(n_atoms)
    force_error = np.asarray(pred_forces) - np.asarray(ref_forces)
    return {
        "energy_mae_meV_per_atom": float(np.mean(np.abs(per_atom)) * 1e3),
        "energy_rmse_meV_per_atom": float(np.sqrt(np.mean(per_atom**2)) * 1e3),
        "force_mae_meV_per_A": float(np.mean(np.abs(force_error)) * 1e3),
        "force_rmse_meV_per_A": float(np.sqrt(np.mean(force_error**2)) * 1e3),
        "structures": int(len(per_atom)),
        "atoms": int(np.sum(n_atoms)),
    }


def predict_structures(predict, params, shift, scale, graphs, batch_size: int, capacity,
                       dtype) -> dict:
    """Run ``predict`` over graphs; returns reference and predicted arrays of real atoms."""
    collected = {key: [] for key in ("energy", "pred_energy", "n_atoms", "forces", "pred_forces")}
    for batch in iterate_batches(graphs, batch_size, capacity, dtype=dtype):
        energies, forces = predict(params, shift, scale, batch)
        graphs_real, atoms_real = batch.graph_mask, batch.atom_mask
        collected["energy"].append(batch.energy[graphs_real])
        collected["pred_energy"].append(np.asarray(energies)[graphs_real])
        collected["n_atoms"].append(batch.n_atoms[graphs_real])
        collected["forces"].append(batch.forces[atoms_real])
        collected["pred_forces"].append(np.asarray(forces)[atoms_real])
    return {key: np.concatenate(value) for key, value in collected.items()}


def metrics_of(predictions: dict) -> dict:
    """:func:`error_metrics` of :func:`predict_structures` output."""
    return error_metrics(predictions["pred_energy"], predictions["energy"], predictions["n_atoms"],
                         predictions["pred_forces"], predictions["forces"])


def evaluate_model(model, structures: list[Structure], batch_size: int = 16,
                   dtype=np.float64) -> tuple[dict, dict]:
    """Metrics and predictions of a :class:`~mdengine.learned.model_io.LoadedModel`.

    Returns ``(metrics, predictions)``; see :func:`error_metrics` and
    :func:`predict_structures`.
    """
    graphs = make_graphs(structures, model.species, model.cutoff_A)
    params = architectures.cast_params(model.params, dtype)
    shift, scale = model.shift_scale(dtype)
    predict = jax.jit(make_predict_fn(model.module, model.cutoff_A))
    capacity = batch_capacity(graphs, batch_size)
    predictions = predict_structures(predict, params, shift, scale, graphs, batch_size, capacity,
                                     dtype)
    return metrics_of(predictions), predictions


def parity_plot(predictions: dict, png: str | Path, title: str = "") -> Path:
    """Write a two-panel parity plot (energy per atom, force components) as PNG.

    Raises:
      InputError: matplotlib is not installed.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError(f"{png}: a parity plot needs matplotlib, which is not installed; "
                         "install it or leave out --plot") from None
    ref_e = predictions["energy"] / predictions["n_atoms"]
    pred_e = predictions["pred_energy"] / predictions["n_atoms"]
    panels = [(ref_e, pred_e, "energy (eV/atom)"),
              (predictions["forces"].ravel(), predictions["pred_forces"].ravel(),
               "force component (eV/Å)")]
    figure, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for axis, (reference, predicted, label) in zip(axes, panels):
        low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
        axis.plot([low, high], [low, high], color="0.6", lw=1)
        axis.scatter(reference, predicted, s=6, alpha=0.6)
        axis.set_xlabel(f"reference {label}")
        axis.set_ylabel(f"predicted {label}")
        axis.set_aspect("equal", adjustable="datalim")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    png = Path(png)
    figure.savefig(png, dpi=120)
    plt.close(figure)
    return png
