#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv.
#
# Finds a Python >= 3.12 (MDENGINE_PYTHON if set, then python3.13, python3.12
# and python3 on PATH, then pyenv's installed versions), creates .venv with it
# and installs mdengine with its pinned dependencies (and the test extras when
# the first argument is "test"). Reinstalls only when pyproject.toml changes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
extras="${1:-}"

python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null
}

find_python() {
    local candidates=()
    [ -n "${MDENGINE_PYTHON:-}" ] && candidates+=("$MDENGINE_PYTHON")
    candidates+=(python3.13 python3.12 python3)
    if command -v pyenv >/dev/null 2>&1; then
        local pyenv_root
        pyenv_root="$(pyenv root)"
        for dir in "$pyenv_root"/versions/3.1[2-9]*; do
            [ -x "$dir/bin/python" ] && candidates+=("$dir/bin/python")
        done
    fi
    for candidate in "${candidates[@]}"; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if [ ! -x "$venv/bin/python" ] || ! python_ok "$venv/bin/python"; then
    if ! python="$(find_python)"; then
        echo "error: mdengine needs Python >= 3.12 and none was found (tried \$MDENGINE_PYTHON," \
             "python3.13, python3.12, python3 and pyenv versions). Install Python 3.12 or newer" \
             "and rerun, or set MDENGINE_PYTHON=/path/to/python3.12." >&2
        exit 1
    fi
    echo "creating $venv with $python ($("$python" --version))" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi

spec="."
[ "$extras" = "test" ] && spec=".[test]"
stamp="$venv/.mdengine-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    echo "installing mdengine and its dependencies into $venv (log: $venv/install.log)" >&2
    if ! { "$venv/bin/python" -m pip install --upgrade pip &&
           "$venv/bin/python" -m pip install -e "$root$( [ "$spec" = "." ] && echo "" || echo "[test]")"; } \
           >"$venv/install.log" 2>&1; then
        tail -n 30 "$venv/install.log" >&2
        echo "error: installing mdengine failed; the full log is $venv/install.log" >&2
        exit 1
    fi
    touch "$stamp"
fi
