"""The shell commands of README.md and docs/*.md cannot drift from the code.

A fenced block with `<!-- readme-test -->` on the line before it (an HTML comment: invisible on
GitHub) runs as written, with bash, in a sandbox laid out like the repository: a copy of the
package, templates/, recipes/ and data_info/, the tiny model at .cache/tiny-llama, the demo data
prepared in data/demo, the venv's bin/ first on PATH and HOME inside the sandbox. Mark only blocks
that run here (no GPU, no vLLM, no hub models, no `make test`, no pip). Every block of the README and
of docs/*.md, marked or not, is checked without running it: each `python -m semievol_lf.X` names a
runnable module, each `semievol-lf X` a subcommand of semievol_lf/cli.py, each `recipes/...yaml` a
committed recipe. Relative links between these pages must point at a file and heading that exist.
"""

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
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]  # docs/cli.md included: its usage lines name commands too
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
    file: str = "README.md"  # relative to the checkout

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def fenced_blocks(text: str, file: str = "README.md") -> list[Block]:
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        opening = re.match(r"(`{3,}|~{3,})(.*)$", lines[i])
        if not opening:
            i += 1
            continue
        fence, end = opening.group(1), i + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        assert end < len(lines), f"{file}:{i + 1}: unclosed code fence"
        before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        blocks.append(Block(i + 1, opening.group(2).strip(), "\n".join(lines[i + 1:end]), before == MARK, file))
        i = end + 1
    return blocks


BLOCKS = [b for path in DOCS for b in fenced_blocks(path.read_text(), str(path.relative_to(ROOT)))]
MARKED = [b for b in BLOCKS if b.marked]


def cli_subcommands() -> set[str]:
    """The names `semievol_lf/cli.py` dispatches on: its COMMANDS table."""
    from semievol_lf.cli import COMMANDS

    return set(COMMANDS)


def runnable_module(name: str) -> bool:
    """`python -m name` runs something: a module with a `__main__` guard, or a package with __main__.py."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:
        return importlib.util.find_spec(f"{name}.__main__") is not None
    return 'if __name__ == "__main__":' in Path(spec.origin).read_text()


def test_the_readme_has_marked_blocks_and_every_marker_is_on_a_block():
    assert any(b.file == "README.md" for b in MARKED), f"no block in README.md is marked {MARK}"
    assert sum(line.strip() == MARK for path in DOCS for line in path.read_text().splitlines()) == len(MARKED), \
        f"a {MARK} line is not right before a code fence"
    assert {b.info.split()[0] if b.info else "" for b in MARKED} <= {"bash", "sh"}, "only shell blocks run"


def test_every_module_and_subcommand_in_the_readme_exists():
    found_modules, found_commands, wrong = set(), set(), []
    subcommands = cli_subcommands()
    for block in BLOCKS:
        for name in MODULE.findall(block.body):
            found_modules.add(name)
            if not runnable_module(name):
                wrong.append(f"{block.where}: `python -m {name}` is not a runnable module")
        for name in SUBCOMMAND.findall(block.body):
            found_commands.add(name)
            if name not in subcommands:
                wrong.append(f"{block.where}: `semievol-lf {name}` is not a subcommand "
                             f"(known: {', '.join(sorted(subcommands))})")
        for pattern in RECIPE.findall(block.body):
            if not list(ROOT.glob(pattern)):
                wrong.append(f"{block.where}: {pattern} does not exist")
    assert not wrong, "\n".join(wrong)
    assert {"semievol_lf.pseudolabel", "semievol_lf.evaluate"} <= found_modules  # the patterns still match
    assert {"run", "export-chat-format"} <= found_commands


def test_the_readme_names_its_commands():
    """The README gives the two commands and the MMLU walk-through, and keeps the section another page fills."""
    text = README.read_text()
    assert len(text.splitlines()) <= 250, "README.md is over 250 lines: move detail to docs/"
    code = "\n".join(b.body for b in BLOCKS if b.file == "README.md")
    for command in ("make demo", "make test", "llamafactory-cli train recipes/warmup_mmlu.yaml",
                    "python -m semievol_lf.pseudolabel recipes/pseudolabel_mmlu.yaml",
                    "llamafactory-cli train recipes/evolve_mmlu.yaml", "semievol-lf run recipes/run_mmlu.yaml"):
        assert command in code, f"README.md no longer gives `{command}`"
    assert "\n## Your own task\n" in text


def test_relative_links_in_the_docs_resolve():
    """[text](path) and [text](path#anchor) between README.md, docs/ and bench/RESULTS.md point at a file that
    exists and, with an anchor, at one of its headings (GitHub's anchor: lower case, punctuation dropped)."""
    def anchors(path: Path) -> set[str]:
        heads = re.findall(r"^#+ (.*)$", path.read_text(), flags=re.M)
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}

    wrong = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https://...
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                wrong.append(f"{doc.relative_to(ROOT)}: ({target}): no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                wrong.append(f"{doc.relative_to(ROOT)}: ({target}): no such heading")
    assert not wrong, "\n".join(wrong)


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
    """make_sandbox plus a copy of the package and of templates/ (so `python -m semievol_lf.recipes` writes
    here, not into the checkout) and a HOME holding a LlamaFactory checkout's data/dataset_info.json."""
    box = make_sandbox(tmp_path_factory.mktemp("readme"), tiny_model, demo_source)
    shutil.copytree(ROOT / "semievol_lf", box / "semievol_lf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "templates", box / "templates")  # a checkout reads its tasks and prompts from here
    for name in ("setup.cfg", "pyproject.toml"):
        shutil.copy(ROOT / name, box / name)
    lf_data = box / "home" / "LLaMA-Factory" / "data"
    lf_data.mkdir(parents=True)
    (lf_data / "dataset_info.json").write_text('{"identity": {"file_name": "identity.json"}}\n')
    return box


@pytest.mark.slow
@pytest.mark.parametrize("block", MARKED, ids=[b.where for b in MARKED])
def test_marked_readme_block_runs(readme_sandbox, block):
    box = readme_sandbox
    committed = {p.relative_to(box): p.read_bytes() for d in ("recipes", "data_info")
                 for p in (box / d).rglob("*") if p.is_file()}
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(box / "home"),
           "PYTHONPATH": str(box)}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], cwd=box, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{block.where} failed ({proc.returncode}):\n{block.body}\n" \
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    changed = [str(rel) for rel, data in committed.items() if (box / rel).read_bytes() != data]
    assert not changed, f"{block.where} changed committed files: {changed}"
