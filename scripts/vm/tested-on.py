#!/usr/bin/env python3
"""README's "tested on" table, made from the facts each machine's last run recorded.

    python3 scripts/vm/tested-on.py record NAME FACTS.json   # keep a run's facts (docs/tested-on/)
    python3 scripts/vm/tested-on.py write                     # rewrite README's table from them
    python3 scripts/vm/tested-on.py check                     # exit 1 if README's table is stale

FACTS.json is what scripts/vm/guest/facts.py prints (a lane's guest writes it to out/facts.json,
and vm-lane.sh copies it to $PYLOG_ARTIFACTS/vm-<lane>.json); `facts.py` run on the host gives
the host's row.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FACTS = ROOT / "docs" / "tested-on"
README = ROOT / "README.md"
START, END = "<!-- tested-on:start -->", "<!-- tested-on:end -->"
WHERE = {  # how each recorded machine is run, and what runs there
    "host": ("the development and CI host", "the whole test suite"),
    "debian-12": ("guest: `scripts/vm-lane.sh debian-12`",
                  "pylog as a systemd service, then the lanes' e2e subset"),
    "debian-13": ("guest: `scripts/vm-lane.sh debian-13`",
                  "pylog as a systemd service; `setup-host.sh` (and `--for-tests`: docker-compose "
                  "v2), `serve.sh`, README's first example and `test.sh` on the compose config "
                  "tests; then the lanes' e2e subset and the Docker 29 unit tests"),
}


def row(name: str, facts: dict) -> str:
    where, what = WHERE.get(name, (name, ""))
    e2e = facts.get("e2e") or {}
    if e2e:  # counts stay in docs/tested-on/: README carries no test counts
        what += ": all passed" if e2e["failures"] + e2e["errors"] == 0 else ": some failed"
    cells = [f"{facts['distribution']} ({where})", facts["kernel"], facts["cgroup"],
             facts["init"], facts["docker"], facts["python"],
             "yes" if facts["ns_get_id"] else "no", what]
    return "| " + " | ".join(cells) + " |"


def table() -> str:
    names = sorted(p.stem for p in FACTS.glob("*.json"))
    names.sort(key=lambda n: (n != "host", n))
    lines = ["| machine | kernel | cgroup (Docker's driver) | init | Docker | Python | `NS_GET_ID` "
             "| what ran there, last run |", "|---|---|---|---|---|---|---|---|"]
    lines += [row(n, json.loads((FACTS / f"{n}.json").read_text())) for n in names]
    return "\n".join(lines)


def rendered(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["record"] and len(argv) == 3:
        FACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(argv[2], FACTS / f"{argv[1]}.json")
        return 0
    text = README.read_text()
    if argv == ["write"]:
        README.write_text(rendered(text))
        return 0
    if argv == ["check"]:
        if rendered(text) != text:
            print("README's tested-on table is not what docs/tested-on/ says: run "
                  "python3 scripts/vm/tested-on.py write", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
