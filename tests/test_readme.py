"""README.md's shell commands cannot drift from the code.

A fenced block with `<!-- readme-test -->` on the line before it (an HTML comment: invisible on
GitHub) runs as written, with bash, in a sandbox laid out like the repository: a copy of the
package (its templates inside), recipes/ and data_info/, the tiny model at .cache/tiny-llama, the demo data
prepared in data/demo, the venv's bin/ first on PATH and HOME inside the sandbox. Mark only blocks
that run here (no GPU, no vLLM, no hub models, no `make test`, no pip). Every block, marked or not,
is checked without running it: each `python -m semievol_lf.X` names a runnable module, each
`semievol-lf X` a subcommand of semievol_lf/cli.py, each `recipes/...yaml` a committed recipe.
"""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BIN, ROOT, make_sandbox

README = ROOT / "README.md"
MARK = "<!-- readme-test -->"
MODULE = re.compile(r"python3? -m (semievol_lf(?:\.\w+)*)")
SUBCOMMAND = re.compile(r"(?<![\w.-])semievol-lf[ \t]+([a-z][\w-]*)")  # not `/path/to/semievol-lf  # ...`
RECIPE = re.compile(r"(?<![\w./-])(recipes/[\w./*-]+\.yaml)")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    info: str  # the fence's info string: "bash", ""
    body: str
    marked: bool


def fenced_blocks(text: str) -> list[Block]:
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        opening = re.match(r"(`{3,}|~{3,})(.*)$", lines[i])
        if not opening:
            i += 1
            continue
        fence, end = opening.group(1), i + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        assert end < len(lines), f"README.md:{i + 1}: unclosed code fence"
        before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        blocks.append(Block(i + 1, opening.group(2).strip(), "\n".join(lines[i + 1:end]), before == MARK))
        i = end + 1
    return blocks


BLOCKS = fenced_blocks(README.read_text())
MARKED = [b for b in BLOCKS if b.marked]


def cli_subcommands() -> set[str]:
    """The names `semievol_lf/cli.py::main` dispatches on (`command == "run"`), read from its source."""
    tree = ast.parse((ROOT / "semievol_lf" / "cli.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "command":
            for comp in node.comparators:
                items = comp.elts if isinstance(comp, (ast.Tuple, ast.List, ast.Set)) else [comp]
                names |= {c.value for c in items if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return names


def runnable_module(name: str) -> bool:
    """`python -m name` runs something: a module with a `__main__` guard, or a package with __main__.py."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:
        return importlib.util.find_spec(f"{name}.__main__") is not None
    return 'if __name__ == "__main__":' in Path(spec.origin).read_text()


def test_the_readme_has_marked_blocks_and_every_marker_is_on_a_block():
    assert MARKED, f"no block in README.md is marked {MARK}"
    assert README.read_text().count(MARK) == len(MARKED), f"a {MARK} line is not right before a code fence"
    assert {b.info.split()[0] if b.info else "" for b in MARKED} <= {"bash", "sh"}, "only shell blocks run"


def test_every_module_and_subcommand_in_the_readme_exists():
    found_modules, found_commands, wrong = set(), set(), []
    subcommands = cli_subcommands()
    for block in BLOCKS:
        for name in MODULE.findall(block.body):
            found_modules.add(name)
            if not runnable_module(name):
                wrong.append(f"README.md:{block.line}: `python -m {name}` is not a runnable module")
        for name in SUBCOMMAND.findall(block.body):
            found_commands.add(name)
            if name not in subcommands:
                wrong.append(f"README.md:{block.line}: `semievol-lf {name}` is not a subcommand "
                             f"(known: {', '.join(sorted(subcommands))})")
        for pattern in RECIPE.findall(block.body):
            if not list(ROOT.glob(pattern)):
                wrong.append(f"README.md:{block.line}: {pattern} does not exist")
    assert not wrong, "\n".join(wrong)
    assert {"semievol_lf.pseudolabel", "semievol_lf.evaluate"} <= found_modules  # the patterns still match
    assert {"run", "export-chat-format"} <= found_commands


def test_the_static_checks_catch_what_they_should():
    assert runnable_module("semievol_lf.pseudolabel") and not runnable_module("semievol_lf.errors")
    assert not runnable_module("semievol_lf.pseudolabell")
    assert {"run", "data-info", "export-chat-format"} <= cli_subcommands() and "runn" not in cli_subcommands()
    assert SUBCOMMAND.findall("cd /path/to/semievol-lf   # x\n.venv/bin/semievol-lf run r.yaml") == ["run"]
    assert RECIPE.findall("x recipes/*_mmlu.yaml --out recipes/qwen") == ["recipes/*_mmlu.yaml"]
    text = f"a\n{MARK}\n\n```bash\necho 1\n```\n```\nplain\n```\n"
    assert fenced_blocks(text) == [Block(4, "bash", "echo 1", True), Block(7, "", "plain", False)]


@pytest.fixture(scope="module")
def readme_sandbox(tmp_path_factory, tiny_model, demo_source) -> Path:
    """make_sandbox plus a copy of the package (so `python -m semievol_lf.recipes` writes here, not into
    the checkout) and a HOME holding a LlamaFactory checkout's data/dataset_info.json."""
    box = make_sandbox(tmp_path_factory.mktemp("readme"), tiny_model, demo_source)
    shutil.copytree(ROOT / "semievol_lf", box / "semievol_lf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml"):
        shutil.copy(ROOT / name, box / name)
    lf_data = box / "home" / "LLaMA-Factory" / "data"
    lf_data.mkdir(parents=True)
    (lf_data / "dataset_info.json").write_text('{"identity": {"file_name": "identity.json"}}\n')
    return box


@pytest.mark.slow
@pytest.mark.parametrize("block", MARKED, ids=[f"README.md:{b.line}" for b in MARKED])
def test_marked_readme_block_runs(readme_sandbox, block):
    box = readme_sandbox
    committed = {p.relative_to(box): p.read_bytes() for d in ("recipes", "data_info")
                 for p in (box / d).rglob("*") if p.is_file()}
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(box / "home"),
           "PYTHONPATH": str(box)}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], cwd=box, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"README.md:{block.line} failed ({proc.returncode}):\n{block.body}\n" \
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    changed = [str(rel) for rel, data in committed.items() if (box / rel).read_bytes() != data]
    assert not changed, f"README.md:{block.line} changed committed files: {changed}"
