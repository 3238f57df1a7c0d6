"""Dependencies point downward (DESIGN.md):
spec <- log/store <- domain <- pipeline <- collect/api/cli."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "plait"
# What each package may import from plait (besides itself and the shared leaf modules).
LEAVES = {"plait.ids", "plait.settings", "plait.observability", "plait.runtime"}
ALLOWED = {
    "spec": set(),
    "store": set(),
    "log": {"store"},
    "identity": {"spec", "log", "store"},
    "profiles": {"spec", "log", "store", "identity"},
    "govern": {"spec", "log", "store", "identity", "profiles"},
    "pipeline": {"spec", "log", "store", "identity", "profiles", "govern", "lake", "audiences"},
    # collection applies the PII policy and suppressions before the log: govern's, below it
    "collect": {"spec", "log", "store", "govern", "identity"},
    # the lake: processed events and profile snapshots as Parquet, queried with DuckDB
    "lake": {"spec", "log", "store", "identity", "profiles", "govern"},
    # computed traits and audiences: evaluated in the pipeline and over the lake
    "audiences": {"spec", "log", "store", "identity", "profiles", "govern", "lake"},
    # delivery: follows the processed log (as the lake's export does) after the pipeline
    "destinations": {"spec", "log", "store", "identity", "profiles", "govern", "lake", "audiences"},
    # reverse ETL: queries over databases and the lake, into the log or a destination's queue
    "reverse_etl": {
        "spec",
        "log",
        "store",
        "govern",
        "identity",
        "collect",
        "lake",
        "destinations",
    },  # fmt: skip
    "api": {
        "spec",
        "log",
        "store",
        "collect",
        "identity",
        "profiles",
        "govern",
        "pipeline",
        "lake",
        "audiences",
        "destinations",
        "reverse_etl",
        "ui",
    },
    # the web console: static files; what it shows comes from the API
    "ui": set(),
}


def plait_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plait"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("plait")}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_downward(package):
    allowed = ALLOWED[package] | {package}
    for path in (SRC / package).rglob("*.py"):
        for module in plait_imports(path):
            if module in LEAVES or module == "plait":
                continue
            top = module.split(".")[1]
            assert top in allowed, f"{path.relative_to(SRC)} imports {module}"


def test_spec_is_pure():
    for path in (SRC / "spec").rglob("*.py"):
        text = path.read_text()
        for banned in ("import sqlalchemy", "import httpx", "open(", "import socket"):
            assert banned not in text, f"{path.name} does I/O ({banned})"
