"""Where a task's data comes from: a local folder, or a folder of a Hugging Face dataset.

    resolve_source("SemiEvol/mmlu", "mmlu")               -> Path("SemiEvol/mmlu")
    resolve_source("hf://luojunyu/SemiEvol/mmlu", "mmlu")
        -> $HF_HOME/hub/datasets--luojunyu--SemiEvol/snapshots/SHA/mmlu

`hf://OWNER/NAME/FOLDER` downloads only FOLDER's files of the dataset repository OWNER/NAME
into the Hugging Face cache (once; offline, `HF_HUB_OFFLINE=1`, the cached copy is used).
A missing folder or an unreachable hub is one UserError that says where the data is.
Not handled: model repositories, revisions other than the default branch.
"""

from pathlib import Path

from ..errors import UserError

HF_PREFIX = "hf://"
RELEASED_REPO = "luojunyu/SemiEvol"
# Folders of the released dataset (mmlu_pro and usmle without their unlabeled files; no convfinqa).
RELEASED_TASKS = ("arc", "fpb", "pubmedqa", "mmlu", "mmlu_pro", "usmle")


def released_source(task: str) -> str:
    """`released_source("mmlu") == "hf://luojunyu/SemiEvol/mmlu"`."""
    return f"{HF_PREFIX}{RELEASED_REPO}/{task}"


def how_to_get(task: str) -> str:
    """The data's two places, for error messages: the hub URL and a local download command."""
    if task not in RELEASED_TASKS:
        return (f"point `source` at a folder with labeled, unlabeled and test files (.csv, .jsonl or .json) "
                f"for task {task}")
    return (f"the data is `source: {released_source(task)}` (fetched into the Hugging Face cache; needs the network "
            f"once), or a local copy: `hf download {RELEASED_REPO} --repo-type dataset --include '{task}/*' "
            f"--local-dir SemiEvol`, then `source: SemiEvol/{task}`")


def parse_hf(source: str) -> tuple[str, str]:
    """`"hf://luojunyu/SemiEvol/mmlu"` -> `("luojunyu/SemiEvol", "mmlu")`; `hf://datasets/...` is accepted too."""
    parts = [p for p in source[len(HF_PREFIX):].split("/") if p]
    if parts[:1] == ["datasets"]:  # huggingface_hub's own URL form
        parts = parts[1:]
    if len(parts) < 3:
        raise UserError(f"{source}: expected hf://OWNER/NAME/FOLDER, e.g. {released_source('mmlu')}")
    return "/".join(parts[:2]), "/".join(parts[2:])


def resolve_source(source: str | Path, task: str) -> Path:
    """The local folder holding the task's split files; fetches `hf://` sources first."""
    if str(source).startswith(HF_PREFIX):
        return _fetch(str(source), task)
    folder = Path(source).expanduser()
    if not folder.exists():
        raise UserError(f"{source}: no such folder; {how_to_get(task)}")
    if not folder.is_dir():
        raise UserError(f"{source}: not a folder (expected one with labeled, unlabeled and test files)")
    return folder


def _fetch(source: str, task: str) -> Path:
    repo_id, folder = parse_hf(source)
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        raise UserError(f"{source}: hf:// sources need huggingface_hub (pip install huggingface_hub)") from None
    try:
        snapshot = snapshot_download(repo_id=repo_id, repo_type="dataset", allow_patterns=[f"{folder}/*"])
    except Exception as err:  # noqa: BLE001 - the network boundary: offline, no route, 404, 401 ... all say the same
        if constants.HF_HUB_OFFLINE:
            why = f"offline (HF_HUB_OFFLINE=1) and not in the cache {constants.HF_HUB_CACHE}"
        else:
            why = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:160]}"
        raise UserError(f"{source}: cannot fetch from the Hugging Face hub ({why}); {how_to_get(task)}") from None
    path = Path(snapshot) / folder
    if not path.is_dir():
        raise UserError(f"{source}: the dataset {repo_id} has no folder {folder!r}; {how_to_get(task)}")
    return path
