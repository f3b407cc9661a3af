"""`make lab`: JupyterLab on notebooks/ with the project's application settings
(jupyter/lab/settings/overrides.json), under which a click on a jupytext `.py` notebook opens
it as a notebook. Your own JupyterLab settings still take precedence over these defaults.

    python -m tmkd_core.lab [jupyter lab arguments...]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "jupyter" / "lab" / "settings"


def command(*extra: str) -> list[str]:
    """The jupyter lab command line of `make lab` (and of the browser tests)."""
    if not (SETTINGS / "overrides.json").exists():
        raise FileNotFoundError(f"{SETTINGS / 'overrides.json'} is missing: restore it from git "
                                "(it makes notebooks/*.py open as notebooks)")
    root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # containers run as root
    return [sys.executable, "-m", "jupyterlab", f"--LabApp.app_settings_dir={SETTINGS}",
            f"--ServerApp.root_dir={ROOT / 'notebooks'}", *root, *extra]


def main(argv: list[str] | None = None) -> None:
    cmd = command(*(sys.argv[1:] if argv is None else argv))
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
