"""The import graph flows one way: launch -> stages -> pipeline; data_prep reaches pipeline only through the
config loader and the shard-format module; bench and dev sit on top. No module imports another that imports
it back (``TYPE_CHECKING`` imports count: a cycle there is a cycle of design), no module imports another's
private names, and one module alone imports deepspeed."""

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("launch", "stages", "pipeline", "data_prep", "bench", "dev")
ALLOWED = {  # package -> the project packages (or modules) it may import
    "launch": ("stages", "pipeline", "data_prep"),
    "stages": ("pipeline",),
    "pipeline": (),
    # the config loader, the shard format, the safe readers of the datasets' own files (REFER's pickles), and
    # the ViT's conv stem (the synthetic scorer and the demo's vision tower are one network)
    "data_prep": (
        "pipeline.config",
        "pipeline.data.shard_format",
        "pipeline.data.dataset_files",
        "pipeline.model.stem",
    ),  # fmt: skip
    "bench": ("stages", "pipeline", "data_prep"),
    "dev": ("bench", "launch", "stages", "pipeline", "data_prep"),
}
DEEPSPEED_OWNER = "pipeline.backends.deepspeed"


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def _import_nodes(path: Path) -> list[ast.Import | ast.ImportFrom]:
    """Every import in the file: top-level, lazy and under TYPE_CHECKING alike."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def _imports(path: Path) -> set[str]:
    """Project modules (and the libraries named in this test) the file imports."""
    found = set()
    for node in _import_nodes(path):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            found |= subs or {node.module}
    return found


ALL = {name: _imports(path) for name, path in MODULES.items()}
GRAPH = {name: {m for m in targets if m.split(".")[0] in PACKAGES} for name, targets in ALL.items()}


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


def test_no_module_imports_another_modules_private_names():
    private = {
        (module, f"{node.module}.{alias.name}")
        for module, path in MODULES.items()
        for node in _import_nodes(path)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES
        for alias in node.names if alias.name.startswith("_") and node.module != module
    }  # fmt: skip
    assert not private, f"private names imported: {sorted(private)}"


def test_one_module_imports_deepspeed():
    owners = {
        m
        for m, targets in ALL.items()
        if any(t == "deepspeed" or t.startswith("deepspeed.") for t in targets)
    }
    assert owners == {DEEPSPEED_OWNER}


def test_pipeline_is_a_library():
    commands = [m for m, p in MODULES.items() if m.startswith("pipeline") and
                ("argparse" in ALL[m] or "__main__" in p.read_text(encoding="utf-8"))]  # fmt: skip
    assert not commands, f"commands under pipeline/ (they belong in launch/): {commands}"


def test_the_check_sees_a_wrong_import():
    assert "pipeline.config" in GRAPH["data_prep.config"] | GRAPH["data_prep.__main__"]
    assert "data_prep.sources.folder" in GRAPH["data_prep.sources"]
    assert "stages.train" in GRAPH["bench.train"] and "bench.train" in GRAPH["dev.engine_overhead"]
    assert "deepspeed" in ALL[DEEPSPEED_OWNER]


def test_every_imported_project_name_exists():
    """Scripts (dev/, bench/) are not imported by the suite: this catches a name they import that a refactor
    renamed or removed."""
    import importlib

    missing = []
    for module, path in MODULES.items():
        for node in _import_nodes(path):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.level == 0
                and node.module in MODULES
            ):
                target = importlib.import_module(node.module)
                missing += [(module, f"{node.module}.{a.name}") for a in node.names
                            if not hasattr(target, a.name) and f"{node.module}.{a.name}" not in MODULES]  # fmt: skip
    assert not missing, f"imported names that do not exist: {missing}"


def test_no_launch_module_shadows_the_standard_library():
    """``deepspeed launch/stage1.py`` puts launch/ first on the path: a launch/inspect.py would be imported
    for the standard library's inspect."""
    import sys

    shadows = sorted(p.stem for p in (REPO / "launch").glob("*.py") if p.stem in sys.stdlib_module_names)
    assert not shadows, f"launch/ modules named like standard-library ones: {shadows}"
