"""XLA CPU settings that mdengine applies before JAX starts its backend.

jaxlib 0.12 hands several kinds of CPU fusions (dots fused with their
neighbors, element-wise chains, reductions) to its YNNPACK library. On an
AVX-512 Xeon this did two kinds of harm to mdengine's step:

- The gradient of a SchNet with tabulated filters on a 9-atom molecule
  crashed the process with a segmentation fault inside YNNPACK's AVX-512
  dot kernel (``dot_fp32_1x64x1_1x16x1_avx512``). It crashed with the dot or
  the reduction fusions enabled, and not with individual dots only.
- A 192-atom water SchNet step took 56.8 ms instead of 21.2 ms.

Handing YNNPACK only individual dots (``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``)
avoids the crash and keeps its fast matrix products. With it, the same water
step took 21.2 ms. The tabulated ethanol step took 220 µs, against 303 µs
for the network with the default fusions and 270 µs with YNNPACK off.
Lennard-Jones at 4,000 and 32,000 atoms ran at the same speed within 4 %
either way.

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
