"""Check a CycloneDX SBOM of the hub's environment (run by ``make sbom`` in the tool venv).

Three things, each an error naming what is wrong:

1. the document validates against the CycloneDX JSON schema of its ``specVersion``
   (cyclonedx-python-lib's strict validator: unknown properties are errors too);
2. every distribution installed in the described environment is pinned in constraints.txt at
   the version installed (the environment is the pinned one, nothing drifted in);
3. every one of them is a component of the SBOM with that version: the SBOM lists every
   pinned dependency the hub ships. Pins only the development tools use (pytest, mypy…) are
   not in the hub's environment and so are not required.

Exit 0 and one summary line on success; exit 1 with the problems otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

_LIST_INSTALLED = (
    "import importlib.metadata as m, json; "
    "print(json.dumps(sorted({d.metadata['Name']: d.version for d in m.distributions()}.items())))"
)


def canonical(name: str) -> str:
    """The PEP 503 form of a distribution name: ``Pygments`` and ``pygments`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(constraints: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in constraints.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return pins


def installed(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-c", _LIST_INSTALLED], check=True, capture_output=True, text=True
    ).stdout
    return {canonical(name): version for name, version in json.loads(out)}


def problems(sbom_text: str, env: dict[str, str], pins: dict[str, str], own: str) -> list[str]:
    found: list[str] = []
    document = json.loads(sbom_text)
    version = SchemaVersion.from_version(document.get("specVersion", "?"))
    error = JsonStrictValidator(version).validate_str(sbom_text)
    if error is not None:
        found.append(f"not valid CycloneDX {version.to_version()}: {error}")
    listed = {
        canonical(c["name"]): c.get("version", "")
        for c in document.get("components", [])
        if c.get("type") == "library"
    }
    for name, have in sorted(env.items()):
        if name == own:
            continue
        if pins.get(name) != have:
            found.append(f"{name} {have} is installed but pinned as {pins.get(name, 'nothing')}")
        if listed.get(name) != have:
            found.append(f"{name} {have} is installed but the SBOM lists {listed.get(name)}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("sbom", type=Path)
    parser.add_argument("--python", type=Path, required=True, help="the described environment")
    parser.add_argument("--constraints", type=Path, required=True)
    parser.add_argument("--own", default="homehub", help="the product itself (not a pin)")
    args = parser.parse_args()
    env = installed(args.python)
    found = problems(args.sbom.read_text(), env, read_pins(args.constraints), args.own)
    if canonical(args.own) not in env:
        found.append(f"{args.own} itself is not installed in {args.python}'s environment")
    for problem in found:
        sys.stderr.write(f"sbom_check: {problem}\n")
    if found:
        return 1
    sys.stdout.write(f"sbom_check: {args.sbom}: valid, lists all {len(env) - 1} pinned packages\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
