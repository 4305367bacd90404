"""The package's shape: no import cycle between its modules, docs/architecture.md names every module (and
nothing that is gone), and the README's Layout section names every folder of the package."""

import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "semievol_lf"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Modules of this package that `path` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from . import shards` imports a module
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    # an import of a package's own __init__ from one of its modules is not an edge of the design
    return {name: {m for m in imports_of(path) if m in modules and m != name and not name.startswith(m + ".")}
            for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a path of module names, or None: {"a": {"b"}, "b": {"a"}} -> ["a", "b", "a"]."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_cycle():
    edges = graph()
    # the graph sees relative imports
    assert "semievol_lf.semievol.pseudolabel.labeling" in edges["semievol_lf.semievol.pseudolabel.shards"]
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_readme_architecture_names_every_module():
    """docs/architecture.md names every module on disk, in a code block, one per line (`config/parser.py  ...`),
    and nothing that is gone; the README's Layout section names every folder of the package."""
    on_disk = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", (ROOT / "docs" / "architecture.md").read_text(), flags=re.M | re.S)
    named = set(re.findall(r"^([\w/]+\.py)\s", "".join(blocks), flags=re.M))
    assert named == on_disk, \
        f"docs/architecture.md misses: {sorted(on_disk - named)}; names gone: {sorted(named - on_disk)}"

    readme = (ROOT / "README.md").read_text()
    layout = readme.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    folders = {f"semievol_lf/{p.relative_to(PACKAGE)}/" for p in PACKAGE.iterdir()
               if p.is_dir() and (p / "__init__.py").is_file()}
    missing = sorted(f for f in folders if f not in layout)
    assert not missing, f"README.md's Layout section does not name {missing}"


def test_ruff_passes():
    """The linter configuration in pyproject.toml holds for the whole tree (ruff comes with the test extra)."""
    import subprocess
    import sys
    from pathlib import Path

    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


# The root of the package: the entry points (`python -m semievol_lf.X` and the console script) and
# what every part shares; each part of the method is found by its folder.
ROOT_MODULES = {"cli", "cli_docs", "prepare", "pseudolabel", "recipes", "evaluate", "run",  # entry points
                "errors", "io_utils", "progress", "paths", "faults", "children", "step"}  # shared
FOLDERS = {"config", "data", "models", "backends", "llamafactory", "semievol", "meteor"}


def test_the_package_root_holds_only_entry_points_and_shared_modules():
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules == ROOT_MODULES, f"new: {sorted(modules - ROOT_MODULES)}; gone: {sorted(ROOT_MODULES - modules)}"
    assert folders == FOLDERS
    for name in ("prepare", "pseudolabel", "recipes", "evaluate", "run"):  # thin: they dispatch through cli.py
        assert len((PACKAGE / f"{name}.py").read_text().splitlines()) < 12


def test_config_and_data_import_no_orchestration():
    """Settings and data are read by the steps, never the other way round: config/ and data/ import
    nothing from semievol/, meteor/, llamafactory/ or the entry points."""
    edges = graph()
    above = ("semievol_lf.semievol.", "semievol_lf.meteor.", "semievol_lf.llamafactory.", "semievol_lf.cli")
    # RunArguments checks its steps at the run folder's paths; prepare writes LlamaFactory's dataset_info format
    allowed = {"semievol_lf.semievol.layout", "semievol_lf.llamafactory.dataset_info"}
    for name, imports in edges.items():
        if name.startswith(("semievol_lf.config", "semievol_lf.data")):
            wrong = {m for m in imports if m.startswith(above) and m not in allowed}
            assert not wrong, f"{name} imports {sorted(wrong)}"


def test_no_test_folder_shadows_a_package_the_lanes_import():
    """tests/ is on sys.path under pytest: a folder `tests/llamafactory` is found as a namespace package
    `llamafactory` in the vLLM venv, where the lane asserts LlamaFactory is absent."""
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir()}
    assert not folders & {"llamafactory", "vllm", "transformers", "torch", "datasets", "semievol_lf"}
