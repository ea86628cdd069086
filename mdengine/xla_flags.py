"""XLA CPU settings that mdengine applies before JAX starts its backend.

jaxlib 0.12 hands several kinds of CPU fusions (dots fused with their
neighbors, element-wise chains, reductions) to its YNNPACK library. On a
2-core AVX-512 Xeon, measured with ``tools/bench_xla_flags.py`` (one core,
steps/s, mdengine's setting against jaxlib's default):

- A 128-feature SchNet on 9-atom ethanol, its rows padded to one 16-atom
  message block, crashed with a segmentation fault inside YNNPACK's AVX-512
  dot kernel under the default, and ran at 3,899 steps/s with individual
  dots. The engine now sums molecules of up to 16 atoms in one unpadded
  block, which the default runs, and faster (5,527 against 4,369 steps/s).
  The crash depends on array shapes, and other systems may meet it.
- The shipped 96-atom water SchNet: 252 against 89 steps/s.
- The shipped water equivariant model: 51.5 against 47.2 steps/s.

Handing YNNPACK only individual dots (``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``)
avoids the crash and keeps its fast matrix products, at the price of small
molecules (the shipped ethanol SchNet: 8,670 against 10,349 steps/s).
Lennard-Jones at 4,000 and 32,000 atoms ran at the same speed within 4 %
either way (``mdengine bench inputs/argon.yaml``).

XLA reads ``XLA_FLAGS`` once, when the first computation creates the CPU
backend, and aborts on a flag it does not know. So the flag is added only
for the jaxlib release it was measured with, only when the user's
``XLA_FLAGS`` does not already choose a YNNPACK setting, and only takes
effect when mdengine is imported before anything has run on JAX.
"""

from __future__ import annotations

import os
from importlib import metadata

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_SETTING = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
# jaxlib releases known to accept the flag (and measured with it).
TESTED_JAXLIB = ("0.12.0", "0.12.0.1")


def _jaxlib_version() -> str | None:
    try:
        return metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return None


def apply_cpu_defaults(environ=os.environ) -> bool:
    """Add the YNNPACK setting to ``environ["XLA_FLAGS"]`` for a tested jaxlib.

    Returns True when the flag was added, False when jaxlib is untested or
    ``XLA_FLAGS`` already sets the YNNPACK fusion type.
    """
    if _jaxlib_version() not in TESTED_JAXLIB:
        return False
    current = environ.get("XLA_FLAGS", "")
    if YNN_FLAG in current:
        return False
    # First, because XLA stops reading flags at a word that does not start with "--".
    environ["XLA_FLAGS"] = f"{YNN_FLAG}={YNN_SETTING} {current}".strip()
    return True
