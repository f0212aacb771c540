"""README's "tested on" table is the one docs/tested-on/ (the lanes' recorded facts) makes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_matches_the_recorded_runs() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts/vm/tested-on.py"), "check"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert {p.stem for p in (ROOT / "docs/tested-on").glob("*.json")} >= {
        "host", "debian-12", "debian-13"}
