"""``mdengine import``: turn a schnetpack 2.x SchNet model into an mdengine model directory.

The input is either the neutral ``.npz`` export written by
``tools/peers/export_schnetpack.py`` (:mod:`mdengine.learned.schnetpack_format`)
or, when torch and schnetpack can be imported in this interpreter, the
torch-saved schnetpack model itself.

The mapping onto :class:`~mdengine.learned.schnet.SchNetSpec`:

- schnetpack's embedding table is indexed by atomic number; the model keeps
  the rows of the chosen species, in their order.
- in2f → ``atomwise``, filter_network → ``filter_in``/``filter_out``,
  f2out → ``update_in``/``update_out`` (with biases, ``update_bias``).
  Torch stores weights as ``[out, in]``, flax kernels as ``[in, out]``.
- Shared interactions (one block used n times) are copied into every block.
- The Gaussian centres and widths are stored explicitly and the cosine
  cutoff is the same function.
- Atomwise's output network → ``readout_hidden``, … , ``readout``.
- schnetpack computes E = s · Σ_i o_i + Σ_i (mean + atomref[Z_i]) with s the
  product of ScaleProperty factors, so the model sets
  ``isolated_atom_reference: false``, scale_s = s and shift_s = mean + atomref[Z_s],
  all times the energy unit in eV.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mdengine.config import InputError
from mdengine.learned import schnetpack_format
from mdengine.learned.schnet import SchNetSpec

log = logging.getLogger(__name__)

# eV per model energy unit and Å per model length unit (CODATA 2018).
ENERGY_UNITS_EV = {"eV": 1.0, "meV": 1e-3, "kcal/mol": 0.0433641043, "kJ/mol": 0.0103642688,
                   "Hartree": 27.211386245988}
LENGTH_UNITS_A = {"Å": 1.0, "A": 1.0, "nm": 10.0, "Bohr": 0.529177210903}
REFERENCE_TOLERANCE = 1e-4


def read_source(path: Path) -> tuple[dict, dict, list[dict]]:
    """Read a neutral export or, with torch available, a schnetpack model file.

    Returns ``(settings, arrays, references)`` as
    :func:`~mdengine.learned.schnetpack_format.read_export` does.

    Raises:
      InputError: the file is missing, unreadable or describes an unsupported model.
    """
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.suffix == ".npz":
        try:
            return schnetpack_format.read_export(path)
        except ValueError as err:
            raise InputError(str(err)) from None
    # NOTE: this direct path has not been run, because mdengine's .venv cannot install the
    # torch build available here. schnetpack 2.0.x also fails to import under torch 2.13
    # without the T_co alias that tools/peers/export_schnetpack.py sets first.
    try:
        import torch
    except ImportError:
        raise InputError(
            f"{path}: reading a schnetpack model file needs torch and schnetpack in this "
            "interpreter; export it with tools/peers/export_schnetpack.py in an environment "
            "that has them and import the .npz it writes") from None
    try:
        # NOTE: weights_only=False unpickles the file, which can run code: import only
        # model files you trust. schnetpack saves whole modules, so there is no safe mode.
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:   # torch raises pickle, runtime and import errors here
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: torch.load failed: {first}") from None
    try:
        settings, arrays = schnetpack_format.extract_schnetpack(model, source=str(path))
    except schnetpack_format.UnsupportedModel as err:
        raise InputError(f"{path}: unsupported model: {err}") from None
    return settings, arrays, []


def _element_symbol(number: int) -> str:
    from ase.data import chemical_symbols
    return chemical_symbols[number]


def _atomic_number(symbol: str, source: Path) -> int:
    from ase.data import atomic_numbers
    if symbol not in atomic_numbers or atomic_numbers[symbol] == 0:
        raise InputError(f"--species: unknown element {symbol!r} (importing {source})")
    return atomic_numbers[symbol]


def choose_species(settings: dict, requested: list[str] | None, source: Path) -> list[str]:
    """Element symbols of the new model: the requested ones, else every element of the table."""
    max_z = settings["max_z"]
    if requested is None:
        return [_element_symbol(z) for z in range(1, min(max_z, 119))]
    if len(set(requested)) != len(requested):
        raise InputError(f"--species: {','.join(requested)} lists an element twice")
    for symbol in requested:
        if _atomic_number(symbol, source) >= max_z:
            raise InputError(f"--species: {symbol} (Z = {_atomic_number(symbol, source)}) is beyond "
                             f"the embedding table of {source}, which stops at Z = {max_z - 1}")
    return list(requested)


def _dense(arrays: dict, prefix: str) -> dict:
    """Flax Dense parameters from a torch layer: kernel ``[in, out]`` and bias ``[out]``."""
    layer = {"kernel": np.ascontiguousarray(arrays[f"{prefix}.weight"].T)}
    if f"{prefix}.bias" in arrays:
        layer["bias"] = np.asarray(arrays[f"{prefix}.bias"])
    return layer


def build_spec(settings: dict, arrays: dict, length_A: float) -> SchNetSpec:
    """Build the :class:`SchNetSpec` that reproduces the exported model, lengths in Å."""
    widths = tuple(settings["readout_widths"])
    return SchNetSpec(
        architecture="schnet",
        features=settings["n_atom_basis"],
        interactions=settings["n_interactions"],
        radial_functions=settings["n_rbf"],
        cutoff_A=settings["cutoff"] * length_A,
        filters=None if settings["n_filters"] == settings["n_atom_basis"] else settings["n_filters"],
        update_bias=True,
        activation=settings["activation"],
        readout_hidden=widths,
        readout_activation=settings["readout_activation"],
        radial_centres_A=tuple(float(v) * length_A for v in arrays["rbf_offsets"]),
        radial_widths_A=tuple(float(v) * length_A for v in arrays["rbf_widths"]),
        isolated_atom_reference=False,
    )


def build_params(settings: dict, arrays: dict, numbers: list[int]) -> dict:
    """Build the flax parameter tree of the imported model (in the export's dtype)."""
    params = {"embedding": {"embedding": np.asarray(arrays["embedding"])[numbers]}}
    for block in range(settings["n_interactions"]):
        prefix = f"interaction_{block}"
        params[prefix] = {
            "filter_in": _dense(arrays, f"{prefix}.filter_in"),
            "filter_out": _dense(arrays, f"{prefix}.filter_out"),
            "atomwise": _dense(arrays, f"{prefix}.in2f"),
            "update_in": _dense(arrays, f"{prefix}.f2out_in"),
            "update_out": _dense(arrays, f"{prefix}.f2out_out"),
        }
    layers = len(settings["readout_widths"]) + 1
    for layer in range(layers):
        if layer == layers - 1:
            name = "readout"
        else:
            name = "readout_hidden" if layer == 0 else f"readout_hidden_{layer}"
        params[name] = _dense(arrays, f"readout_{layer}")
    return params


def import_model(source: Path, output: Path, species: list[str] | None = None,
                 energy_unit: str = "eV", length_unit: str = "Å", overwrite: bool = False):
    """Write the mdengine model directory ``output`` for the schnetpack model ``source``.

    Args:
      source: a neutral ``.npz`` export, or a torch-saved schnetpack model.
      output: the model directory to create.
      species: element symbols to keep (the network's order); None keeps
        every element of schnetpack's embedding table.
      energy_unit, length_unit: units the schnetpack model was trained in.
      overwrite: replace a model directory already at ``output``.

    Returns:
      ``(model, report)``: the loaded :class:`~mdengine.learned.model_io.LoadedModel`
      and a dict with the reference comparison (empty without references).

    Raises:
      InputError: an unreadable or unsupported source, bad options, or an
        imported model that disagrees with the references stored in the export.
    """
    from mdengine.learned.model_io import MODEL_JSON, load_model, new_model, save_model

    source, output = Path(source), Path(output)
    if energy_unit not in ENERGY_UNITS_EV:
        raise InputError(f"--energy-unit: unknown unit {energy_unit!r}; known: "
                         f"{', '.join(ENERGY_UNITS_EV)}")
    if length_unit not in LENGTH_UNITS_A:
        raise InputError(f"--length-unit: unknown unit {length_unit!r}; known: "
                         f"{', '.join(LENGTH_UNITS_A)}")
    if (output / MODEL_JSON).exists() and not overwrite:
        raise InputError(f"{output}: already contains a model ({MODEL_JSON}); use --overwrite "
                         "to replace it")

    settings, arrays, references = read_source(source)
    chosen = choose_species(settings, species, source)
    numbers = [_atomic_number(symbol, source) for symbol in chosen]
    energy_eV, length_A = ENERGY_UNITS_EV[energy_unit], LENGTH_UNITS_A[length_unit]

    spec = build_spec(settings, arrays, length_A)
    params = build_params(settings, arrays, numbers)
    scale_eV = [settings["energy_scale"] * energy_eV] * len(chosen)
    shift_eV = [(settings["energy_mean_per_atom"] + float(arrays["atomref"][z])) * energy_eV
                for z in numbers]
    training = {"imported_from": str(source.resolve()), "importer": "mdengine import",
                "schnetpack": {key: settings[key] for key in
                               ("shared_interactions", "max_z", "radial_basis",
                                "postprocessors", "energy_key", "force_key") if key in settings},
                "energy_unit": energy_unit, "length_unit": length_unit}
    model = new_model(spec, chosen, shift_eV, scale_eV, params=params, training=training)
    report = compare_references(model, references, energy_eV, length_A) if references else {}
    if report and report["max_relative_error"] > REFERENCE_TOLERANCE:
        raise InputError(f"{source}: the imported model disagrees with the reference energies "
                         f"and forces stored in the export (max relative error "
                         f"{report['max_relative_error']:.2e} > {REFERENCE_TOLERANCE:g}); check "
                         f"--energy-unit and --length-unit; nothing was written to {output}")
    save_model(output, model)
    loaded = load_model(output)   # checks the parameter tree against the architecture
    log.info("%s: imported %s (%d species)", output, source, len(chosen))
    return loaded, report


def reference_structures(references: list[dict], energy_eV: float, length_A: float):
    """Convert stored references (model units) to :class:`~mdengine.learned.data.Structure` (eV, Å)."""
    from mdengine.learned.data import Structure

    structures = []
    for reference in references:
        periodic = bool(np.any(reference["pbc"]))
        structures.append(Structure(
            elements=[_element_symbol(int(z)) for z in reference["numbers"]],
            positions=np.asarray(reference["positions"], np.float64) * length_A,
            energy=float(reference["energy"]) * energy_eV,
            forces=np.asarray(reference["forces"], np.float64) * energy_eV / length_A,
            cell=np.asarray(reference["cell"], np.float64) * length_A if periodic else None))
    return structures


def predict(model, structures, dtype_name: str = "float64") -> tuple[np.ndarray, list[np.ndarray]]:
    """Energies (eV) and forces (eV/Å) of ``model`` on ``structures``, every periodic image included.

    Returns ``(energies [M], forces)`` with ``forces[m]`` of shape ``[n_m, 3]``.
    """
    import jax
    import jax.numpy as jnp

    from mdengine.learned.architectures import cast_params
    from mdengine.learned.data import batch_capacity, make_graphs
    from mdengine.learned.evaluate import make_predict_fn, predict_structures

    if dtype_name == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if dtype_name == "float64" else jnp.float32
    missing = sorted({e for s in structures for e in s.elements} - set(model.species))
    if missing:
        raise InputError(f"the imported model has no {', '.join(missing)}; import with "
                         "--species covering every element")
    graphs = make_graphs(structures, model.species, model.cutoff_A)
    capacity = batch_capacity(graphs, 1)
    shift, scale = model.shift_scale(dtype)
    result = predict_structures(jax.jit(make_predict_fn(model.module, model.cutoff_A)),
                                cast_params(model.params, dtype), shift, scale, graphs, 1,
                                capacity, dtype)
    splits = np.cumsum([s.n_atoms for s in structures])[:-1]
    return result["pred_energy"], np.split(result["pred_forces"], splits)


def compare_references(model, references: list[dict], energy_eV: float, length_A: float) -> dict:
    """Compare the model with schnetpack's stored energies and forces, in float64.

    The relative error of a structure is max(|ΔE| / |E|, max |ΔF| / max |F|).
    """
    structures = reference_structures(references, energy_eV, length_A)
    energies, forces = predict(model, structures, "float64")
    errors = []
    for structure, energy, force in zip(structures, energies, forces):
        energy_error = abs(energy - structure.energy) / max(abs(structure.energy), 1e-12)
        force_error = (np.max(np.abs(force - structure.forces))
                       / max(np.max(np.abs(structure.forces)), 1e-12))
        errors.append(max(energy_error, force_error))
    return {"structures": len(structures), "max_relative_error": float(max(errors)),
            "relative_errors": [float(e) for e in errors]}


def describe(model, source: Path, report: dict) -> str:
    """One-line summary of an imported model."""
    spec = model.description.model
    text = (f"{model.path}: imported schnetpack SchNet from {source} ({spec.features} features, "
            f"{spec.interactions} interactions, {spec.radial_functions} Gaussians, cutoff "
            f"{spec.cutoff_A:g} Å; species {', '.join(model.species[:8])}"
            f"{', …' if len(model.species) > 8 else ''})")
    if report:
        text += (f"; matches the {report['structures']} reference structures in the export to "
                 f"relative {report['max_relative_error']:.1e}")
    return text
