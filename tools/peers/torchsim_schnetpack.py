"""A torch-sim ``ModelInterface`` around a schnetpack 2.x model (torch-sim has no SchNet wrapper).

Runs in the peer environment. Each call builds the neighbor list from
scratch with vesin (torch-sim's own ``vesin_nl_ts``), as torch-sim's
bundled models do, and evaluates the schnetpack model, whose Forces
module returns −∂E/∂R.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_schnetpack  # noqa: E402  (the schnetpack import fix lives there)

import torch_sim as ts  # noqa: E402
from torch_sim.models.interface import ModelInterface  # noqa: E402
from torch_sim.neighbors import vesin_nl_ts  # noqa: E402


class SchNetPackModel(ModelInterface):
    """Energies (eV) and forces (eV/Å) of one system from a schnetpack model.

    Args:
      model: a schnetpack ``NeuralNetworkPotential`` (energy key ``energy``,
        force key ``forces``), already in ``dtype``.
      cutoff_A: the model's cutoff (Å); the neighbor list uses exactly this radius.
      dtype: torch dtype of positions and outputs.
    """

    def __init__(self, model, cutoff_A: float, dtype=torch.float32,
                 device=torch.device("cpu")) -> None:
        super().__init__()
        self.model = model
        self.properties = export_schnetpack.import_schnetpack().properties
        self.cutoff = torch.tensor(cutoff_A, dtype=torch.float64)
        self._device = device
        self._dtype = dtype
        self._compute_forces = True
        self._compute_stress = False

    def forward(self, state, **_) -> dict[str, torch.Tensor]:
        """Return ``{"energy": [1], "forces": [N, 3]}`` for a single-system ``SimState``."""
        if not isinstance(state, ts.SimState):
            state = ts.SimState(**state)
        if state.n_systems != 1:
            raise ValueError(f"SchNetPackModel handles one system, got {state.n_systems}")
        p = self.properties
        positions = state.positions
        cell = state.row_vector_cell.squeeze(0)
        periodic = bool(torch.as_tensor(state.pbc).any())
        mapping, shifts = vesin_nl_ts(positions=positions.detach(), cell=cell.detach(),
                                      pbc=periodic, cutoff=self.cutoff)
        offsets = shifts.to(positions.dtype) @ cell
        inputs = {
            p.Z: state.atomic_numbers.long(),
            p.R: positions.detach().clone(),
            p.cell: cell.unsqueeze(0),
            p.pbc: torch.as_tensor([periodic] * 3).unsqueeze(0),
            p.idx_m: torch.zeros(positions.shape[0], dtype=torch.long),
            p.n_atoms: torch.tensor([positions.shape[0]], dtype=torch.long),
            p.idx_i: mapping[0].long(),
            p.idx_j: mapping[1].long(),
            p.offsets: offsets,
        }
        results = self.model(inputs)
        return {"energy": results["energy"].detach().to(self._dtype).reshape(1),
                "forces": results["forces"].detach().to(self._dtype)}
