"""The import graph flows one way: launch -> stages -> pipeline; data_prep reaches pipeline only through the
config loader and the shard-format module; no module imports another that imports it back."""

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("launch", "stages", "pipeline", "data_prep", "bench")
ALLOWED = {  # package -> the project packages (or modules) it may import
    "launch": ("stages", "pipeline"),
    "stages": ("pipeline",),
    "pipeline": (),
    "data_prep": ("pipeline.config", "pipeline.data.shard_format"),
    "bench": ("stages", "pipeline", "data_prep"),
}


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Project modules imported anywhere in the file (lazy imports too), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in
                   ast.unparse(node.test) for n in ast.walk(node)}  # fmt: skip
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            found |= subs or {node.module}
    return {m for m in found if m.split(".")[0] in PACKAGES}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_they_may(package):
    allowed = (package, *ALLOWED[package])
    wrong = {
        (module, target)
        for module, targets in GRAPH.items() if module.split(".")[0] == package
        for target in targets if not any(target == a or target.startswith(a + ".") for a in allowed)
    }  # fmt: skip
    assert not wrong, f"imports against the flow: {sorted(wrong)}"


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*path[path.index(target) :], target])}")
            if target in GRAPH and not state.get(target):
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if not state.get(module):
            visit(module, [module])


def test_the_check_sees_a_wrong_import():
    assert "pipeline.config" in GRAPH["data_prep.config"] | GRAPH["data_prep.__main__"]
    assert "data_prep.sources.folder" in GRAPH["data_prep.sources"]
