"""The neutral export of a schnetpack 2.x SchNet model: one ``.npz`` file.

schnetpack stores a trained model as a pickled PyTorch module, which only an
interpreter with torch and schnetpack can read. This module turns such a
module into plain arrays and a JSON description, and reads them back. It
imports only numpy and the standard library (torch only inside
:func:`extract_schnetpack`), so the peer environment's exporter
(``tools/peers/export_schnetpack.py``) loads it by file path without jax
or mdengine's dependencies.

Layout of the ``.npz`` file (read with ``allow_pickle=False``):

    settings_json                 str: the JSON description (see :func:`extract_schnetpack`)
    embedding                     [max_z, F]  rows indexed by atomic number
    rbf_offsets, rbf_widths       [K]  Gaussian centres μ_k and widths σ_k (model length unit)
    atomref                       [max_z]  per-element energy offsets (model energy unit)
    interaction_{b}.{layer}.weight / .bias   torch layout [out, in] / [out]; layers
                                  in2f (no bias), filter_in, filter_out, f2out_in, f2out_out
    readout_{l}.weight / .bias    the Atomwise output network, l = 0 … L−1
    reference_{i}.numbers / .positions / .cell / .pbc / .energy / .forces
                                  optional reference structures with schnetpack's
                                  energies and forces (model units)

Everything is in the model's own units; schnetpack does not record them,
so the importer takes them as options (eV and Å by default).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

FORMAT = "schnetpack-schnet-export"
FORMAT_VERSION = 1
INTERACTION_LAYERS = ("in2f", "filter_in", "filter_out", "f2out_in", "f2out_out")
ACTIVATION_NAMES = ("shifted_softplus", "silu")


class UnsupportedModel(ValueError):
    """The schnetpack model uses a feature that the neutral format cannot express."""


def _shifted_softplus(x):
    return np.logaddexp(0.0, x) - math.log(2.0)


def _silu(x):
    return x / (1.0 + np.exp(-x))


_REFERENCE_ACTIVATIONS = {"shifted_softplus": _shifted_softplus, "silu": _silu,
                          "identity": lambda x: x}


def _qualified_name(obj) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _identify_activation(activation, where: str) -> str:
    """Name a torch activation by evaluating it on test points.

    schnetpack stores activations as plain functions or modules, so their
    identity is checked numerically against the supported ones.
    """
    import torch

    points = np.linspace(-6.0, 6.0, 49)
    with torch.no_grad():
        values = activation(torch.as_tensor(points, dtype=torch.float64)).numpy()
    for name, reference in _REFERENCE_ACTIVATIONS.items():
        if np.allclose(values, reference(points), rtol=1e-6, atol=1e-9):
            return name
    label = getattr(activation, "__name__", type(activation).__name__)
    raise UnsupportedModel(f"{where}: activation {label} is not supported; "
                           f"supported: {', '.join(ACTIVATION_NAMES)}")


def _dense_arrays(layer, prefix: str, arrays: dict, where: str) -> str:
    """Store a schnetpack Dense layer's weight and bias; return its activation's name."""
    arrays[f"{prefix}.weight"] = layer.weight.detach().cpu().numpy()
    if layer.bias is not None:
        arrays[f"{prefix}.bias"] = layer.bias.detach().cpu().numpy()
    activation = getattr(layer, "activation", None)
    return "identity" if activation is None else _identify_activation(activation, where)


def _expect_identity(name: str, where: str) -> None:
    if name != "identity":
        raise UnsupportedModel(f"{where}: expected no activation, found {name}")


def _interaction_arrays(interaction, block: int, arrays: dict) -> str:
    """Store one SchNetInteraction; return the activation it uses."""
    where = f"representation.interactions[{block}]"
    if type(interaction).__name__ != "SchNetInteraction":
        raise UnsupportedModel(f"{where} is {_qualified_name(interaction)}, not SchNetInteraction")
    prefix = f"interaction_{block}"
    layers = {"in2f": interaction.in2f,
              "filter_in": interaction.filter_network[0],
              "filter_out": interaction.filter_network[1],
              "f2out_in": interaction.f2out[0],
              "f2out_out": interaction.f2out[1]}
    names = {name: _dense_arrays(layer, f"{prefix}.{name}", arrays, f"{where}.{name}")
             for name, layer in layers.items()}
    if interaction.in2f.bias is not None:
        raise UnsupportedModel(f"{where}.in2f has a bias, which SchNet's in2f does not")
    for name in ("in2f", "filter_out", "f2out_out"):
        _expect_identity(names[name], f"{where}.{name}")
    if names["filter_in"] != names["f2out_in"]:
        raise UnsupportedModel(f"{where}: filter activation {names['filter_in']} differs from "
                               f"the update activation {names['f2out_in']}")
    if names["filter_in"] not in ACTIVATION_NAMES:
        raise UnsupportedModel(f"{where}: the filter network has no activation")
    for name in ("filter_in", "filter_out", "f2out_in", "f2out_out"):
        if layers[name].bias is None:
            raise UnsupportedModel(f"{where}.{name} has no bias, which SchNet's layer has")
    return names["filter_in"]


def _representation_settings(representation, arrays: dict) -> dict:
    """Check a schnetpack SchNet representation and store its arrays."""
    name = type(representation).__name__
    if name != "SchNet":
        raise UnsupportedModel(f"representation is {_qualified_name(representation)}; only "
                               "schnetpack's SchNet is supported")
    if getattr(representation, "electronic_embeddings", None):
        raise UnsupportedModel("representation uses electronic embeddings (total charge or spin), "
                               "which are not supported")

    radial = representation.radial_basis
    if type(radial).__name__ not in ("GaussianRBF", "GaussianRBFCentered"):
        raise UnsupportedModel(f"radial basis {_qualified_name(radial)} is not supported; "
                               "supported: GaussianRBF, GaussianRBFCentered")
    arrays["rbf_offsets"] = radial.offsets.detach().cpu().numpy()
    arrays["rbf_widths"] = radial.widths.detach().cpu().numpy()

    cutoff_fn = representation.cutoff_fn
    if type(cutoff_fn).__name__ != "CosineCutoff":
        raise UnsupportedModel(f"cutoff function {_qualified_name(cutoff_fn)} is not supported; "
                               "supported: CosineCutoff")
    cutoff = float(np.asarray(cutoff_fn.cutoff.detach().cpu().numpy()).reshape(-1)[0])

    embedding = representation.embedding
    if type(embedding).__name__ != "Embedding":
        raise UnsupportedModel(f"nuclear embedding {_qualified_name(embedding)} is not supported; "
                               "supported: torch.nn.Embedding")
    arrays["embedding"] = embedding.weight.detach().cpu().numpy()

    interactions = list(representation.interactions)
    shared = len(interactions) > 1 and all(block is interactions[0] for block in interactions)
    activations = {_interaction_arrays(block, index, arrays)
                   for index, block in enumerate(interactions)}
    if len(activations) != 1:
        raise UnsupportedModel(f"interaction blocks use different activations {sorted(activations)}")
    return {
        "n_atom_basis": int(representation.n_atom_basis),
        "n_filters": int(representation.n_filters),
        "n_interactions": len(interactions),
        "shared_interactions": shared,
        "max_z": int(arrays["embedding"].shape[0]),
        "n_rbf": int(arrays["rbf_offsets"].shape[0]),
        "radial_basis": type(radial).__name__,
        "cutoff": cutoff,
        "cutoff_function": "cosine",
        "activation": activations.pop(),
    }


def _atomwise_settings(atomwise, arrays: dict) -> dict:
    """Check the Atomwise energy module and store its output network."""
    if type(atomwise).__name__ != "Atomwise":
        raise UnsupportedModel(f"output module {_qualified_name(atomwise)} is not supported; "
                               "expected Atomwise followed by Forces")
    if atomwise.aggregation_mode != "sum":
        raise UnsupportedModel(f"Atomwise aggregation_mode {atomwise.aggregation_mode!r} is not "
                               "supported; only 'sum' gives an extensive energy")
    if int(atomwise.n_out) != 1:
        raise UnsupportedModel(f"Atomwise n_out = {atomwise.n_out}; an energy needs n_out = 1")
    layers = list(atomwise.outnet)
    activations = []
    for index, layer in enumerate(layers):
        if type(layer).__name__ != "Dense":
            raise UnsupportedModel(f"Atomwise.outnet[{index}] is {_qualified_name(layer)}, not Dense")
        activations.append(_dense_arrays(layer, f"readout_{index}", arrays,
                                         f"Atomwise.outnet[{index}]"))
        if layer.bias is None:
            arrays[f"readout_{index}.bias"] = np.zeros(layer.weight.shape[0],
                                                       layer.weight.detach().cpu().numpy().dtype)
    _expect_identity(activations[-1], f"Atomwise.outnet[{len(layers) - 1}]")
    hidden = activations[:-1]
    if len(set(hidden)) > 1 or "identity" in hidden:
        raise UnsupportedModel(f"Atomwise hidden layers use activations {hidden}; expected one "
                               f"of {', '.join(ACTIVATION_NAMES)} on every hidden layer")
    return {
        "readout_widths": [int(layer.weight.shape[0]) for layer in layers[:-1]],
        "readout_activation": hidden[0] if hidden else "shifted_softplus",
        "energy_key": atomwise.output_key,
    }


def _postprocessing(model, energy_key: str, force_key: str, max_z: int) -> dict:
    """Reduce the postprocessors to E = scale·E_net + n·mean + Σ atomref[Z]."""
    energy_scale, force_scale, mean = 1.0, 1.0, 0.0
    atomref = np.zeros(max_z, np.float64)
    used = []
    processors = list(model.postprocessors) if getattr(model, "do_postprocessing", True) else []
    for index, processor in enumerate(processors):
        name = type(processor).__name__
        where = f"postprocessors[{index}] ({name})"
        if name in ("CastTo64", "CastTo32"):
            used.append(name)
        elif name == "AddOffsets":
            if processor._property != energy_key:
                raise UnsupportedModel(f"{where} acts on {processor._property!r}, not the energy "
                                       f"{energy_key!r}")
            if not processor.is_extensive:
                raise UnsupportedModel(f"{where} has is_extensive = False, which is not supported")
            if processor.add_mean:
                mean += float(processor.mean.detach().cpu().double().reshape(-1)[0])
            if processor.add_atomrefs:
                table = processor.atomref.detach().cpu().double().numpy().reshape(-1)
                atomref[: min(max_z, table.size)] += table[:max_z]
            used.append(name)
        elif name == "ScaleProperty":
            if processor.input_key != processor.output_key:
                raise UnsupportedModel(f"{where} writes {processor.output_key!r} from "
                                       f"{processor.input_key!r}; only in-place scaling is supported")
            factor = float(processor.scale.detach().cpu().double().reshape(-1)[0])
            if processor.input_key == energy_key:
                energy_scale, mean, atomref = energy_scale * factor, mean * factor, atomref * factor
            elif processor.input_key == force_key:
                force_scale *= factor
            else:
                raise UnsupportedModel(f"{where} scales {processor.input_key!r}, which is neither "
                                       "the energy nor the forces")
            used.append(name)
        else:
            raise UnsupportedModel(f"{where} is not supported; supported: CastTo64, CastTo32, "
                                   "AddOffsets, ScaleProperty")
    if not math.isclose(energy_scale, force_scale, rel_tol=1e-6):
        raise UnsupportedModel(f"postprocessors scale the energy by {energy_scale:g} but the forces "
                               f"by {force_scale:g}, so the forces are not −∇E")
    return {"energy_scale": energy_scale, "energy_mean_per_atom": mean, "atomref": atomref,
            "postprocessors": used}


def extract_schnetpack(model, source: str = "") -> tuple[dict, dict]:
    """Convert a schnetpack 2.x ``NeuralNetworkPotential`` with SchNet into (settings, arrays).

    Args:
      model: the torch module, as ``torch.load`` returns it.
      source: the file it came from, recorded in the settings.

    Returns:
      ``settings``: JSON-ready description; ``arrays``: name → numpy array
      (the layout in the module docstring).

    Raises:
      UnsupportedModel: a representation, cutoff, radial basis, activation,
        output module, input module or postprocessor outside what the
        format describes.
    """
    for attribute in ("representation", "output_modules"):
        if not hasattr(model, attribute):
            raise UnsupportedModel(f"{_qualified_name(model)} has no {attribute}; expected a "
                                   "schnetpack NeuralNetworkPotential")
    for index, module in enumerate(getattr(model, "input_modules", [])):
        if type(module).__name__ not in ("PairwiseDistances", "Strain"):
            raise UnsupportedModel(f"input_modules[{index}] is {_qualified_name(module)}; "
                                   "supported: PairwiseDistances, Strain")

    arrays: dict[str, np.ndarray] = {}
    settings = {"format": FORMAT, "format_version": FORMAT_VERSION, "source": source}
    settings.update(_representation_settings(model.representation, arrays))

    outputs = list(model.output_modules)
    if len(outputs) != 2 or type(outputs[1]).__name__ != "Forces":
        names = [type(module).__name__ for module in outputs]
        raise UnsupportedModel(f"output_modules are {names}; expected [Atomwise, Forces]")
    settings.update(_atomwise_settings(outputs[0], arrays))
    forces = outputs[1]
    if not forces.calc_forces or forces.energy_key != settings["energy_key"]:
        raise UnsupportedModel(f"Forces differentiates {forces.energy_key!r} (calc_forces = "
                               f"{forces.calc_forces}); expected the Atomwise output "
                               f"{settings['energy_key']!r}")
    settings["force_key"] = forces.force_key

    offsets = _postprocessing(model, settings["energy_key"], forces.force_key, settings["max_z"])
    arrays["atomref"] = offsets.pop("atomref")
    settings.update(offsets)
    settings["parameter_dtype"] = str(arrays["embedding"].dtype)
    return settings, arrays


def write_export(path: str | Path, settings: dict, arrays: dict,
                 references: list[dict] | None = None) -> Path:
    """Write a neutral export file.

    ``references`` are dicts with ``numbers [N]``, ``positions [N, 3]``,
    ``cell [3, 3]``, ``pbc [3]``, ``energy`` (scalar) and ``forces [N, 3]``,
    in the model's units.
    """
    path = Path(path)
    content = dict(arrays)
    for index, reference in enumerate(references or []):
        for key, value in reference.items():
            content[f"reference_{index}.{key}"] = np.asarray(value)
    settings = dict(settings, references=len(references or []))
    content["settings_json"] = np.asarray(json.dumps(settings, sort_keys=True))
    with path.open("wb") as handle:
        np.savez_compressed(handle, **content)
    return path


def read_export(path: str | Path) -> tuple[dict, dict, list[dict]]:
    """Read a neutral export file: (settings, arrays, references).

    Raises:
      ValueError: not a neutral export, an unknown format version or
        missing arrays; the message names the file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            content = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    if "settings_json" not in content:
        raise ValueError(f"{path}: no settings_json entry; this is not a neutral schnetpack export "
                         "(write one with tools/peers/export_schnetpack.py)")
    settings = json.loads(str(content.pop("settings_json")))
    if settings.get("format") != FORMAT or settings.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format {settings.get('format')!r} version "
                         f"{settings.get('format_version')!r}; expected {FORMAT!r} version "
                         f"{FORMAT_VERSION}")
    references = []
    for index in range(int(settings.get("references", 0))):
        prefix = f"reference_{index}."
        references.append({key[len(prefix):]: content.pop(key)
                           for key in list(content) if key.startswith(prefix)})
    required = ["embedding", "rbf_offsets", "rbf_widths", "atomref"]
    for block in range(settings["n_interactions"]):
        required += [f"interaction_{block}.{layer}.weight" for layer in INTERACTION_LAYERS]
    missing = [key for key in required if key not in content]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing[:3]}")
    return settings, content, references
