"""Run the wrapdock CLI in-process with ARGS and record which heavy modules it imported.

    python bench/importcheck.py OUT.json ARGS...

Writes {"modules": {"sh": bool, "jsonschema": bool, ...}, "exit": code} to OUT.json. The CLI is
entered exactly as the console script enters it (wrapdock.cli:main); this file imports only the
standard library, so whatever shows up in sys.modules came from wrapdock.
"""

from __future__ import annotations

import json
import sys

WATCHED = ("sh", "jsonschema", "yaml", "tabulate", "click", "referencing", "rpds")


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    sys.argv = ["wrapdock", *args]
    before = {name for name in WATCHED if name in sys.modules}
    code: object = 0
    try:
        from wrapdock.cli import main as cli_main

        code = cli_main(args)
    except SystemExit as exc:
        code = exc.code
    modules = {name: name in sys.modules and name not in before for name in WATCHED}
    with open(out, "w") as handle:
        json.dump({"modules": modules, "exit": code if isinstance(code, int) else str(code)}, handle)
    sys.exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    main()
