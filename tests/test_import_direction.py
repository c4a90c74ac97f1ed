"""The rooms import one way: catalog <- keypool <- dispatch <- queues <- accounts <- gateway <- web.

Nothing imports the app.

Read from the code's own `import` statements (type-checking imports included), so a new arrow back up
fails here the day it is written. `python3 -m pytest tests/test_import_direction.py` checks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lowest first: a room may import the rooms before it, never one after it.
LAYERS = ["catalog", "keypool", "dispatch", "queues", "accounts", "gateway", "web"]
# Test and demo gear: it imports no room of poolgate, and only the command line starts it.
FAKE_UPSTREAM = "fake_upstream"
# The composition root builds everything and hands the rooms above it plain objects.
APP_MODULE = "gateway.app"
# Arrows still pointing up, each with the work that removes it. Keep this list shrinking.
KNOWN_BACK_ARROWS: set[tuple[str, str]] = set()


def _imports() -> list[tuple[str, str]]:
    """(importing module, imported module) for every absolute import in poolgate's own packages."""
    found = []
    for room in [*LAYERS, FAKE_UPSTREAM]:
        for path in (ROOT / room).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found += [(module, alias.name) for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.append((module, node.module))
    return found


def _room(module: str) -> str:
    return module.split(".")[0]


def test_no_room_imports_a_room_above_it() -> None:
    back = set()
    for importer, imported in _imports():
        here, there = _room(importer), _room(imported)
        if here in LAYERS and there in LAYERS and LAYERS.index(there) > LAYERS.index(here):
            if importer == APP_MODULE and there == "web":
                continue  # the app mounts the pages; the pages do not know the app
            back.add((importer, imported))
    assert back - KNOWN_BACK_ARROWS == set()


def test_nothing_imports_the_app_module() -> None:
    importers = {importer for importer, imported in _imports() if imported == APP_MODULE}
    assert importers - {"gateway.cli"} == set()  # the command line serves it; nobody else reaches for it


def test_the_fake_upstream_stands_apart() -> None:
    for importer, imported in _imports():
        if _room(importer) == FAKE_UPSTREAM:
            assert _room(imported) not in LAYERS, f"{importer} imports {imported}"
        elif _room(imported) == FAKE_UPSTREAM:
            assert importer == "gateway.cli", f"{importer} imports the fake upstream"


def test_known_back_arrows_are_still_real() -> None:
    # An arrow that was removed leaves this list, so the list cannot hide a new one under an old name.
    assert KNOWN_BACK_ARROWS <= set(_imports())
