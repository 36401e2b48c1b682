"""The core and the HTTP/1.1 parser are sans-IO: they import only the standard
library, never an I/O framework. The one exception is numpy, an optional
accelerator of the Maglev fill, in the one module that holds that fill."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import clientlb._core
import clientlb._http1

CORE = Path(clientlb._core.__file__).parent
HTTP1 = Path(clientlb._http1.__file__).parent
FORBIDDEN = frozenset({"httpx", "starlette", "asyncio", "anyio", "trio", "socket", "uvicorn"})
DYNAMIC = frozenset({"import_module", "__import__"})
#: Modules allowed an import from outside the standard library: pure computation,
#: or mypyc's class options (and their type), which need nothing at run time.
ACCELERATED = {"_maglev_arrays.py": {"numpy"}, "_picking.py": {"mypy_extensions", "_typeshed"}}


def imported_modules(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in DYNAMIC and isinstance(node.args[0].value, str):
                names.add(node.args[0].value.split(".")[0])
    return names


def core_files() -> list[Path]:
    """The core's files and the sans-IO HTTP/1.1 package's."""
    files = sorted(CORE.rglob("*.py")) + sorted(HTTP1.rglob("*.py"))
    assert len(files) >= 15
    return files


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(CORE.parent)))
def test_core_module_imports_no_io_framework(path: Path) -> None:
    imported = imported_modules(path.read_text(encoding="utf-8"))
    assert not imported & FORBIDDEN, f"{path.name} imports {sorted(imported & FORBIDDEN)}"
    outside = {name for name in imported if name not in sys.stdlib_module_names}
    allowed = {"__future__"} | ACCELERATED.get(path.name, set())
    assert not outside - allowed, f"{path.name} imports non-stdlib {sorted(outside)}"


@pytest.mark.parametrize(
    "source",
    [
        "import httpx",
        "import anyio.abc",
        "from asyncio import sleep",
        "from starlette.types import Scope",
        "def f():\n    import socket\n",
        "try:\n    import trio\nexcept ImportError:\n    pass\n",
        "import importlib\nimportlib.import_module('uvicorn.config')",
        "__import__('socket')",
    ],
)
def test_the_check_catches_forbidden_imports(source: str) -> None:
    assert imported_modules(source) & FORBIDDEN


def test_relative_imports_are_fine() -> None:
    assert imported_modules("from ._pool import Pool\nfrom . import _state") == set()


def test_httpx_and_httpcore_are_imported_in_one_place() -> None:
    """The shells take httpx from ``clientlb._httpx``, so moving to another library
    with its API is a one-file change."""
    package = CORE.parent
    importers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if {"httpx", "httpcore"} & imported_modules(path.read_text(encoding="utf-8"))
    )
    assert importers == ["_httpx.py"]
