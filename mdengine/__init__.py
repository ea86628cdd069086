"""mdengine: molecular dynamics on JAX with jax-md spaces and neighbor lists.

Internal units are Å, eV and amu, so the natural time unit is
Å·sqrt(amu/eV) ≈ 10.1805 fs; see :mod:`mdengine.units`.
"""

from mdengine.xla_flags import apply_cpu_defaults

__version__ = "0.1.0"

# Before any module imports jax_md, whose import starts the XLA backend.
apply_cpu_defaults()
