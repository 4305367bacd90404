"""SemiEvol steps 2-5: turn the unlabeled set into selected pseudo-labeled training data.

    python -m semievol_lf.pseudolabel recipes/pseudolabel_mmlu.yaml [key=value ...]

1. ICP: the k nearest labeled examples of every unlabeled question (FAISS, one search).
2. CL: n configurations {base, warm} x {0..3 shots} answer every question at temperature 1.
3. Self-justify: the warm model (`judge_model`) reads the n responses and writes the pseudo-response (Eq. 5).
4. AS: entropy of each pseudo-response under the warm model (`judge_model`, Eq. 6), keep H <= tau (Eq. 7-8).

Outputs in `output_dir`: selected.json + dataset_info.json (what `recipes/evolve_<task>.yaml`
trains on, with the labeled set), candidates.jsonl, stats.json, index/, cache/.
Answers in the unlabeled file are never read. Re-running the same recipe resumes.

Data parallelism (`num_shards`, `shard`): see shards.py.
"""

from pathlib import Path

from ...config import PseudolabelArguments, as_config
from ...errors import exit_on_user_error
from ...io_utils import read_json
from ...llamafactory.dataset_info import DATA_INFO
from ...progress import Timer, setup_logging
from ...step import StepOutputs
from . import shards
from .labeling import SELECTION_KEY, label, load_inputs, manifest_of, select_and_write


def pseudolabel(cfg: PseudolabelArguments) -> dict:
    """Run the step (or one shard, or the merge); return the stats that are also written to stats.json
    (for a shard, a summary of what it labeled)."""
    task, labeled, unlabeled, excluded = load_inputs(cfg)
    if cfg.shard is not None:
        return shards.label_shard(cfg, task, labeled, unlabeled)
    if cfg.num_shards > 1:
        return shards.merge_shards(cfg, task, labeled, unlabeled, excluded)
    out = Path(cfg.output_dir)
    step = StepOutputs(out, manifest_of(cfg, labeled, unlabeled), "stats.json", cfg.overwrite_output_dir,
                       cache_neutral=frozenset({SELECTION_KEY}))
    if step.finished():
        print(f"pseudolabel: {out} already holds the finished result of these inputs")
        return read_json(out / "stats.json")
    timer = Timer()
    samples, index_reused = label(cfg, task, labeled, unlabeled, out, timer)
    return select_and_write(cfg, task, labeled, samples, excluded, timer.seconds, index_reused)


def main(cfg: PseudolabelArguments | dict | None = None) -> dict:
    """`main(dict)` for tests and `semievol-lf run`; the CLI reads `recipe.yaml key=value ...`."""
    cfg = as_config(PseudolabelArguments, cfg)
    stats = pseudolabel(cfg)
    if cfg.shard is not None:
        print(f"shard {stats['shard']}: labeled {stats['unlabeled']} questions into {stats['output_dir']}; "
              f"when all {cfg.num_shards} shards are done, merge them: {shards.command(cfg, shard=None)}")
        return stats
    print(f"kept {stats['kept']} of {stats['unlabeled']} pseudo-labels (tau={stats['tau']}); "
          f"outputs in {cfg.output_dir}; evolve trains on {Path(cfg.output_dir) / DATA_INFO}")
    return stats


if __name__ == "__main__":
    setup_logging()
    with exit_on_user_error():
        main()
