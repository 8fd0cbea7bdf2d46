"""wrapdock's state checker (wrapdock/statecheck.py) against fastjsonschema's ahead-of-time code.

    .venv/bin/pip install fastjsonschema && .venv/bin/python bench/checkers.py [--rounds N]

No root; everything happens in a temporary directory. For each checker: its verdicts against
jsonschema's on the unit tests' broken records, microseconds per valid record of each kind, the
import of its generated module after what `ps` has imported, reading and checking 200 container
records in a fresh process, and a whole `wrapdock ps -a` over those 200 (all interleaved, medians).
The checkers: "ours"; "fastjsonschema", `compile_to_code` as it is (the module imports the package
for its exception class); "fjs-standalone", the same code with the exception class defined in the
module instead, so the package is not imported. README "State and files" quotes the numbers.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from precompile import precompile  # noqa: E402  (bench/precompile.py)

from tests.unit.test_state_shape import CONTAINER, IPAM, NETWORK, VALID, mutations  # noqa: E402
from wrapdock import resources, statecheck  # noqa: E402
from wrapdock.state import FOLDERS, StateStore  # noqa: E402

CHECKERS = ["ours", "fastjsonschema", "fjs-standalone"]
_PACKAGE_IMPORT = "from fastjsonschema import JsonSchemaValueException, JsonSchemaValuesException\n"
_OWN_EXCEPTION = '''class JsonSchemaValueException(ValueError):
    def __init__(self, message, value=None, name=None, definition=None, rule=None):
        super().__init__(message)
        self.message, self.value, self.name, self.definition, self.rule = message, value, name, definition, rule


JsonSchemaValuesException = JsonSchemaValueException
'''
# Runs wrapdock's console script with `checker` put in place of wrapdock.state._matcher (argv[1]: the
# checker, argv[2]: the folder of the generated modules).
_LAUNCHER = '''import functools, sys
checker, generated = sys.argv.pop(1), sys.argv.pop(1)
if checker != "ours":
    sys.path.insert(0, generated)
    import wrapdock.state

    @functools.cache
    def _matcher(kind):
        import importlib, zlib
        from wrapdock import resources
        module = importlib.import_module(f"{checker.replace('-', '_')}_{kind}")
        zlib.crc32(resources.schema_text(kind).encode())  # the staleness guard ours pays too
        validate, invalid = module.validate, module.JsonSchemaValueException

        def matches(record):
            try:
                validate(record)
                return True
            except invalid:
                return False
        return matches
    wrapdock.state._matcher = _matcher
'''


def generate(folder: Path) -> None:
    import fastjsonschema

    for kind in FOLDERS:
        # detailed_exceptions=False would leave the schema out of every raise, but fastjsonschema
        # 2.22.3 cannot generate `const` without it (KeyError: 'definition_rule')
        code = fastjsonschema.compile_to_code(json.loads(resources.schema_text(kind)), use_default=False)
        entry = f"validate_https___wrapdock_invalid_state_{kind}_schema_json"
        assert f"def {entry}(" in code and _PACKAGE_IMPORT in code
        code += f"\n\nvalidate = {entry}\n"
        (folder / f"fastjsonschema_{kind}.py").write_text(code)
        (folder / f"fjs_standalone_{kind}.py").write_text(code.replace(_PACKAGE_IMPORT, _OWN_EXCEPTION))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(folder)], check=True)


def validator(checker: str, kind: str):
    """A predicate: True when the record matches."""
    if checker == "ours":
        return getattr(statecheck, kind)
    module = importlib.import_module(f"{checker.replace('-', '_')}_{kind}")

    def matches(record) -> bool:
        try:
            module.validate(record)
            return True
        except module.JsonSchemaValueException:
            return False
    return matches


def verdicts() -> None:
    import jsonschema

    for kind, record in VALID.items():
        reference = jsonschema.Draft202012Validator(json.loads(resources.schema_text(kind)),
                                                    format_checker=jsonschema.FormatChecker())
        cases = mutations(record)
        wrong = {checker: sum(validator(checker, kind)(r) != reference.is_valid(r) for _, r in cases)
                 for checker in CHECKERS}
        print(f"  {kind:10} {len(cases)} broken records; verdicts unlike jsonschema's: {wrong}")


def per_record() -> None:
    big = copy.deepcopy(CONTAINER)
    big["env"] = [f"K{i}=v" for i in range(10)]
    big["endpoints"] = [dict(big["endpoints"][0], ifname=f"eth{i}", address=f"10.20.{i}.2") for i in range(3)]
    big["ports"] = [dict(big["ports"][0], host_port=8080 + i) for i in range(4)]
    print(f"  {'record (µs, best of 25)':30}" + "".join(f"{checker:>16}" for checker in CHECKERS))
    for label, record in [*VALID.items(), ("container, 3 networks, 4 ports", big)]:
        kind = label.split(",")[0]
        cells = []
        for checker in CHECKERS:
            matches = validator(checker, kind)
            assert matches(record)
            cells.append(min(timeit.repeat(lambda m=matches, r=record: m(r), number=5000, repeat=25)) / 5000 * 1e6)
        print(f"  {label:30}" + "".join(f"{cell:16.1f}" for cell in cells))


def make_state(root: Path, containers: int = 200) -> None:
    store = StateStore(root / "state")
    store.put("network", "web", NETWORK)
    ipam = {**IPAM, "allocations": {}}
    for i in range(containers):
        record = copy.deepcopy(CONTAINER)
        cid = hashlib.sha256(str(i).encode()).hexdigest()
        address = f"10.20.{i // 250}.{i % 250 + 2}"
        record.update(id=cid, name=f"c{i}", netns=f"c{i}", hostname=f"c{i}",
                      created=f"2026-12-01T10:{i // 60:02d}:{i % 60:02d}+00:00")
        record["endpoints"][0].update(host_ifname=f"wd{cid[:12]}0", address=address)
        record["ports"][0]["host_port"] = 10000 + i
        ipam["allocations"][address] = {"owner": cid, "time": record["created"]}
        store.put("container", cid, record)
    store.put("ipam", "web", ipam)


def interleaved(rounds: int, commands: dict[str, list[str]], parse=None) -> dict[str, list[float]]:
    """Each command once per round, the order rotating; the first round is a warm-up. Wall time in ms,
    or what `parse` reads from its output."""
    import time

    samples: dict[str, list[float]] = {label: [] for label in commands}
    labels = list(commands)
    for round_ in range(rounds + 1):
        for label in labels[round_ % len(labels):] + labels[:round_ % len(labels)]:
            started = time.perf_counter()
            done = subprocess.run(commands[label], capture_output=True, text=True, check=True)
            took = (time.perf_counter() - started) * 1000
            if round_:
                samples[label].append(parse(done.stdout) if parse else took)
    return samples


def report(samples: dict[str, list[float]], unit: str = "ms") -> None:
    for label, values in samples.items():
        print(f"  {label:40} median {statistics.median(values):7.2f} {unit}   min {min(values):7.2f} {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    if importlib.util.find_spec("fastjsonschema") is None:
        raise SystemExit("bench/checkers.py: fastjsonschema is not installed (.venv/bin/pip install fastjsonschema)")
    with tempfile.TemporaryDirectory(prefix="wdcheckers-") as temp:
        work = Path(temp)
        (work / "generated").mkdir()
        generate(work / "generated")
        precompile(sys.executable)  # wrapdock as installed (bench/run does the same): it runs the `ps` timed here
        sys.path.insert(0, str(work / "generated"))
        make_state(work)
        launcher = work / "launcher.py"
        launcher.write_text(_LAUNCHER + "from wrapdock.cli import run\n\nrun()\n")
        timed = work / "timed.py"
        timed.write_text(_LAUNCHER + '''import time, wrapdock.cli, zlib
from pathlib import Path
from wrapdock.state import StateStore
started = time.perf_counter()
exec(sys.argv[1])
print((time.perf_counter() - started) * 1000)
''')
        python, generated = sys.executable, str(work / "generated")
        import_of = {"ours": "import wrapdock.statecheck", "fastjsonschema": "import fastjsonschema_container",
                     "fjs-standalone": "import fjs_standalone_container"}
        read_all = f"assert len(StateStore(Path({str(work / 'state')!r})).all('container')) == 200"

        print("verdicts (the unit tests' broken records):")
        verdicts()
        print("one valid record:")
        per_record()
        print(f"importing the container checker after what ps imported ({args.rounds} fresh processes each):")
        report(interleaved(args.rounds, {c: [python, str(timed), c, generated, import_of[c]] for c in CHECKERS},
                           parse=float))
        print(f"reading and checking 200 container records, checker's import included ({args.rounds} each):")
        report(interleaved(args.rounds, {c: [python, str(timed), c, generated, read_all] for c in CHECKERS},
                           parse=float))
        print(f"wrapdock ps -a with 200 containers, whole process ({args.rounds} each):")
        ps = ["--state-dir", str(work / "state"), "--data-dir", str(work / "data"), "ps", "-a"]
        report(interleaved(args.rounds, {c: [python, str(launcher), c, generated, *ps] for c in CHECKERS}))


if __name__ == "__main__":
    main()
