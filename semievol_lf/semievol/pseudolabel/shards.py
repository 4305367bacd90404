"""Data parallelism for pseudolabel: label shards of the unlabeled set separately, then merge.

    # one process per GPU, each labeling every 4th question from the i-th
    CUDA_VISIBLE_DEVICES=$i python -m semievol_lf.pseudolabel RECIPE backend=vllm num_shards=4 shard=$i
    # then select over the union (loads no model)
    python -m semievol_lf.pseudolabel RECIPE backend=vllm num_shards=4

tau is a percentile over the whole set, so a shard stops before selection: it runs steps 1-4 up
to the entropies into `output_dir/shards/i-of-N/` (manifest.json, index/, cache/,
shard_stats.json, and samples.jsonl written last). The merge checks that all N shards were made
from this config's inputs and settings, then selects and writes what an unsharded run writes.
`theta` is merge-only: shards ignore it, so a merge may pick another theta without re-labeling.
"""

import shlex
import sys
from pathlib import Path

from ...config import PseudolabelArguments
from ...data.loading import Example
from ...data.tasks import Task
from ...errors import UserError
from ...io_utils import atomic_write_json, atomic_write_jsonl, read_json, read_jsonl
from ...progress import Timer, banner
from ...step import StepOutputs
from .labeling import SELECTION_KEY, Sample, label, manifest_of, select_and_write

SHARD_RESULT = "samples.jsonl"  # written last: its presence means the shard finished
SHARD_STATS = "shard_stats.json"


def shard_manifest(manifest: dict, cfg: PseudolabelArguments, shard: int) -> dict:
    """A shard's manifest from the step's (`manifest_of`): the same inputs, including the whole (filtered)
    unlabeled list, so one run's shards differ in `shard` only; not the selection's settings (labeling.py
    SELECTION_ONLY), which only the merge reads."""
    return {**{k: v for k, v in manifest.items() if k != SELECTION_KEY}, "shard": shard_name(shard, cfg.num_shards)}


def shard_name(shard: int, num_shards: int) -> str:
    return f"{shard}-of-{num_shards}"


def shard_dir(cfg: PseudolabelArguments, shard: int) -> Path:
    return Path(cfg.output_dir) / "shards" / shard_name(shard, cfg.num_shards)


def shard_of(unlabeled: list[Example], shard: int, num_shards: int) -> list[Example]:
    """Every `num_shards`-th question from the `shard`-th: balanced, and fixed by the input order."""
    return unlabeled[shard::num_shards]


def label_shard(cfg: PseudolabelArguments, task: Task, labeled: list[Example], unlabeled: list[Example]) -> dict:
    """Label shard `cfg.shard` into its own folder; resumes like the unsharded step."""
    folder = shard_dir(cfg, cfg.shard)
    mine = shard_of(unlabeled, cfg.shard, cfg.num_shards)
    summary = {"shard": shard_name(cfg.shard, cfg.num_shards), "unlabeled": len(mine), "output_dir": str(folder)}
    manifest = shard_manifest(manifest_of(cfg, labeled, unlabeled), cfg, cfg.shard)
    if StepOutputs(folder, manifest, SHARD_RESULT, cfg.overwrite_output_dir).finished():
        print(f"pseudolabel: {folder} already holds this finished shard")
        return summary
    timer = Timer()
    samples, index_reused = label(cfg, task, labeled, mine, folder, timer)
    atomic_write_json(folder / SHARD_STATS, {"timings_s": timer.seconds, "index_reused": index_reused})
    atomic_write_jsonl(folder / SHARD_RESULT, [s.to_row() for s in samples])  # last: marks the shard finished
    return summary


def merge_shards(cfg: PseudolabelArguments, task: Task, labeled: list[Example], unlabeled: list[Example],
                 excluded: list[str]) -> dict:
    """Select over the union of the finished shards; the outputs are those of an unsharded run, except that
    stats.json says `shards: N` and its per-stage `timings_s` are summed over the shards (not wall-clock)."""
    manifest = manifest_of(cfg, labeled, unlabeled)
    _check_shards(cfg, manifest)
    out = Path(cfg.output_dir)
    if StepOutputs(out, manifest, "stats.json", cfg.overwrite_output_dir, frozenset({SELECTION_KEY})).finished():
        print(f"pseudolabel: {out} already holds the merged result of these inputs")
        return read_json(out / "stats.json")
    banner(f"Pseudo-label: merge {cfg.num_shards} shards")
    rows, timings, index_reused = _read_shards(cfg, unlabeled)
    samples = [Sample.from_row(u, rows[u.uid]) for u in unlabeled]  # the unlabeled order, as unsharded
    return select_and_write(cfg, task, labeled, samples, excluded, timings, index_reused, shards=cfg.num_shards)


def _read_shards(cfg: PseudolabelArguments,
                 unlabeled: list[Example]) -> tuple[dict[str, dict], dict[str, float], bool]:
    """(id -> shard row, per-stage seconds summed over the shards, whether every shard reused its index)."""
    rows: dict[str, dict] = {}
    timings: dict[str, float] = {}
    index_reused = True
    for i in range(cfg.num_shards):
        folder = shard_dir(cfg, i)
        shard_rows = list(read_jsonl(folder / SHARD_RESULT))
        if [r["id"] for r in shard_rows] != [u.uid for u in shard_of(unlabeled, i, cfg.num_shards)]:
            raise UserError(f"{folder / SHARD_RESULT} does not hold the questions of its shard; re-make it: "
                            f"{command(cfg, shard=i, overwrite_output_dir='true')}")
        rows.update((r["id"], r) for r in shard_rows)
        shard_stats = read_json(folder / SHARD_STATS)
        for stage, seconds in shard_stats["timings_s"].items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 3)
        index_reused &= shard_stats["index_reused"]
    return rows, timings, index_reused


def _check_shards(cfg: PseudolabelArguments, manifest: dict) -> None:
    """Refuse shards made from other inputs or settings, then missing or unfinished shards, naming the fix."""
    todo = []
    for i in range(cfg.num_shards):
        folder = shard_dir(cfg, i)
        if not (folder / "manifest.json").is_file():
            todo.append(i)
            continue
        old, new = read_json(folder / "manifest.json"), shard_manifest(manifest, cfg, i)
        if old != new:
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            raise UserError(
                f"{folder} was made from other inputs than this merge (changed: {', '.join(changed)}). Merge with "
                f"the shards' settings, or re-make the shard: {command(cfg, shard=i, overwrite_output_dir='true')}")
        if not (folder / SHARD_RESULT).is_file():
            todo.append(i)
    if len(todo) == 1:
        raise UserError(f"cannot merge: shard {shard_name(todo[0], cfg.num_shards)} is missing or unfinished "
                        f"({shard_dir(cfg, todo[0])}); run it: {command(cfg, shard=todo[0])}")
    if todo:
        names = ", ".join(shard_name(i, cfg.num_shards) for i in todo)
        loop = f"for i in {' '.join(map(str, todo))}; do {command(cfg, shard=None)} shard=$i; done"
        raise UserError(f"cannot merge: shards {names} are missing or unfinished "
                        f"(in {Path(cfg.output_dir) / 'shards'}); run them: {loop}")


def command(cfg: PseudolabelArguments, **keys: object) -> str:
    """This process's command line with `keys` set (None: left out) and `num_shards` made explicit; a template
    naming `output_dir` when the step was called from Python rather than the command line."""
    argv = sys.argv[1:]
    at = next((n for n, a in enumerate(argv) if a.endswith((".yaml", ".yml"))), None)
    recipe, overrides = ((argv[at], argv[at + 1:]) if at is not None
                         else ("RECIPE.yaml", [f"output_dir={cfg.output_dir}"]))
    keys = {"num_shards": cfg.num_shards, **keys}
    kept = [a for a in overrides if a.partition("=")[0].strip() not in keys]
    return shlex.join(["python", "-m", "semievol_lf.pseudolabel", recipe, *kept,
                       *(f"{k}={v}" for k, v in keys.items() if v is not None)])
