"""Imports point inward: every module of voxgate imports only its own package and the layers
below it, and nothing outside ``voxgate.store`` imports SQLAlchemy.

core ← protocols ← providers, store, models ← pipeline ← web, benchmarks, client ← server,
commands ← cli. Engines (providers) never see a session; the pipeline composes them into one.
The codecs are sans-I/O and below the providers, so an engine that is a client of a protocol
voxgate also serves (the Wyoming providers) frames with the same codec.
"""

from __future__ import annotations

import ast
from pathlib import Path

import voxgate

PACKAGE = Path(voxgate.__file__).parent
LAYERS: list[set[str]] = [
    {"core"},
    {"protocols"},
    {"providers", "store", "models", "evaluation", "speech_corpus"},
    {"pipeline"},
    {"web", "benchmarks", "client"},
    {"server", "commands"},
    {"cli"},
    {"__main__"},
]
LAYER_OF = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str:
    """The top-level part of voxgate a module belongs to (``voxgate.store.devices`` → store)."""
    part = module.split(".")[1] if "." in module else ""
    return "" if part == "__init__" else part


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue  # Alembic's scripts belong to the store
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        found.append((".".join(relative.parts), path))
    return found


def test_every_part_of_voxgate_has_a_layer() -> None:
    parts = {_part(module) for module, _ in _modules()} - {""}
    assert parts <= set(LAYER_OF), f"add to LAYERS: {sorted(parts - set(LAYER_OF))}"


def test_imports_point_inward() -> None:
    upward = []
    for module, path in _modules():
        source = _part(module)
        if not source:
            continue  # voxgate/__init__.py
        for name in _imports(path):
            if not name.startswith("voxgate.") or _part(name) == source:
                continue
            target = _part(name)
            if target and LAYER_OF[target] >= LAYER_OF[source]:
                upward.append(f"{module} imports {name}")
    assert upward == []


def test_nothing_outside_the_store_imports_sqlalchemy() -> None:
    leaks = [
        f"{module} imports {name}"
        for module, path in _modules()
        if _part(module) != "store"
        for name in _imports(path)
        if name.split(".")[0] in {"sqlalchemy", "alembic", "asyncpg", "aiosqlite"}
    ]
    assert leaks == []


def test_only_the_redis_state_imports_redis() -> None:
    """Redis is optional: one module speaks to it, and only ``redis.url`` loads that module."""
    leaks = [
        f"{module} imports {name}"
        for module, path in _modules()
        if module != "voxgate.server.shared.redis_state"
        for name in _imports(path)
        if name.split(".")[0] == "redis"
    ]
    assert leaks == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The parser finds imports anywhere in a module, including inside functions."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from voxgate.server.app import create_app\n")
    assert _imports(module) == ["voxgate.server.app"]
