#!/usr/bin/env bash
# GPU speed study in one go (about ten minutes on one recent GPU): Lennard-Jones
# argon at about 1e5 and 1e6 atoms, and the shipped water SchNet and equivariant
# models at several box sizes and replica counts. Each part is `mdengine bench`
# (fused scan against a Python loop, warm-up excluded, medians of 3 repeats);
# the JSON and PNG files go to OUTPUT_DIR (default runs/gpu_bench), and a
# summary table is printed at the end.
#
# Needs mdengine's environment with a CUDA build of jaxlib (for example
# `pip install "jax[cuda12]==0.12.0.1"` into .venv). MDENGINE_PY names another
# interpreter. GPU_BENCH_SMOKE=1 runs tiny sizes on whatever backend there is,
# to check the script itself.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_bench}
py=${MDENGINE_PY:-.venv/bin/python}

if [ "${GPU_BENCH_SMOKE:-0}" = 1 ]; then
    lj_sizes=1; water_sizes=1; replicas=1,2; lj_steps=20; water_steps=5
else
    backend=$("$py" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo none)
    if [ "$backend" != gpu ] && [ "$backend" != cuda ]; then
        echo "error: jax in $py uses the '$backend' backend, not a GPU; install a CUDA build of" \
             "jaxlib there (or set MDENGINE_PY), or set GPU_BENCH_SMOKE=1 to test the script" >&2
        exit 1
    fi
    # argon.yaml is 4,000 atoms: 3x3x3 gives 108,000 and 6x6x6 864,000.
    lj_sizes=3,6; water_sizes=2,4; replicas=1,8,32; lj_steps=200; water_steps=50
fi

mkdir -p "$out"
"$py" -c 'import jax; print("devices:", jax.devices())' | tee "$out/devices.txt"
"$py" -m mdengine.cli bench inputs/argon.yaml --sizes "$lj_sizes" --steps "$lj_steps" \
    --repeats 3 --output-dir "$out/lj_argon"
"$py" -m mdengine.cli bench inputs/water32_schnet_nvt.yaml --sizes "$water_sizes" \
    --replicas "$replicas" --steps "$water_steps" --repeats 3 --output-dir "$out/water_schnet"
"$py" -m mdengine.cli bench inputs/water32_equivariant_nvt.yaml --sizes "$water_sizes" \
    --replicas "$replicas" --steps "$water_steps" --repeats 3 --output-dir "$out/water_equivariant"

"$py" - "$out" <<'PY'
import json
import sys
from pathlib import Path

print(f"{'benchmark':<18} {'atoms':>9} {'replicas':>8} {'steps/s':>9} {'atom-steps/s':>13} "
      f"{'fused/loop':>10} {'compile s':>9} {'device MiB':>10}")
for path in sorted(Path(sys.argv[1]).glob("*/bench.json")):
    for r in json.loads(path.read_text())["records"]:
        device = r["peak_device_memory_mib"]
        print(f"{path.parent.name:<18} {r['atoms']:>9} {r['replicas']:>8} {r['fused_steps_per_s']:>9.1f} "
              f"{r['atom_steps_per_s']:>13.3g} {r['fused_over_loop']:>10.2f} {r['compile_s']:>9.1f} "
              f"{'-' if device is None else f'{device:.0f}':>10}")
PY
