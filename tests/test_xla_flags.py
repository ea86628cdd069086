"""mdengine's XLA CPU settings reach XLA_FLAGS without overriding the user's."""

from __future__ import annotations

import os
import subprocess
import sys

from mdengine import xla_flags

PRINT_FLAGS = "import os, mdengine; print(os.environ.get('XLA_FLAGS', ''))"


def flags_after_import(environment: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | environment
    result = subprocess.run([sys.executable, "-c", PRINT_FLAGS], env=env, capture_output=True,
                            text=True, check=True)
    return result.stdout.strip()


def test_import_prepends_ynnpack_setting():
    flags = flags_after_import({"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"})
    assert flags.split() == [f"{xla_flags.YNN_FLAG}={xla_flags.YNN_SETTING}",
                             "--xla_cpu_multi_thread_eigen=false"]


def test_import_keeps_user_ynnpack_setting():
    own = f"{xla_flags.YNN_FLAG}=LIBRARY_FUSION_TYPE_INVALID"
    assert flags_after_import({"XLA_FLAGS": own}) == own


def test_untested_jaxlib_gets_no_flag(monkeypatch):
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: "9.9.9")
    environ = {}
    assert not xla_flags.apply_cpu_defaults(environ)
    assert environ == {}
