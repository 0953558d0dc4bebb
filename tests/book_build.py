"""Run a strict Jupyter Book build (shared by the build test and the gate tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def strict_build(source: Path, out: Path, *, execute: str | None = None, timeout: int = 900):
    """``jupyter-book build SOURCE -W -n --keep-going --all`` into ``out``; returns the process.

    ``execute`` overrides ``execute.execute_notebooks`` (e.g. ``"off"``) through a copy of
    ``_config.yml`` written into ``out``, leaving the real configuration untouched.
    """
    out.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((source / "_config.yml").read_text())
    if execute is not None:
        config.setdefault("execute", {})["execute_notebooks"] = execute
    # Jupyter Book finds local extensions relative to the config file, which moves to ``out``.
    extensions = config.get("sphinx", {}).get("local_extensions") or {}
    for name, path in extensions.items():
        base = source if (source / path).exists() else REPO   # a fixture book borrows the course's
        extensions[name] = str((base / path).resolve())
    config_path = out / "_config.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(source), "--config", str(config_path),
           "--path-output", str(out), "-W", "-n", "--keep-going", "--all"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
