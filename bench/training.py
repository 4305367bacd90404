"""CPU LoRA training speed: SmolLM2-135M-Instruct's warm-up fine-tune under several settings, same data.

    python bench/training.py                       # every setting below, 4 optimizer steps each
    python bench/training.py --steps 8 --settings preset "batch 8"

Each setting is one real `llamafactory-cli train` (the recipe the run writes: semievol_lf's SmolLM2 CPU
preset on the released FPB labeled rows, the first 64) capped at `--steps` optimizer steps of 8
examples; examples/s is LlamaFactory's own `train_samples_per_second` (all_results.json), which
leaves out the model load. Settings change one thing against the preset (4 x 2 accumulation, fp32,
1 thread): the batch split, bf16 autocast (this CPU has AVX512-BF16), threads. Packing is left out: it turns
examples/s into packed rows/s, and the batch split shows padding is not where the time goes. The loss
after the last step is printed beside it: a setting that trains faster but learns otherwise shows there.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import real_stats  # noqa: E402  (bench/real_stats.py: a fine-tune's loss curve)

RELEASED = Path(os.environ.get("SEMIEVOL_DATA") or ROOT.parent / "shared" / "semievol-data")

# name -> (recipe keys over the preset's, OMP threads)
SETTINGS = {
    "preset": ({}, 1),
    "batch 8": ({"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1}, 1),
    # transformers refuses bf16 without a GPU unless told it is on the CPU (then torch.autocast("cpu"))
    "bf16 autocast": ({"bf16": True, "use_cpu": True}, 1),
    "bf16, 2 threads": ({"bf16": True, "use_cpu": True}, 2),
    "2 threads": ({}, 2),
}


def recipe(model: Path, data: Path, out: Path, steps: int, rows: int) -> dict:
    from semievol_lf.llamafactory.recipes import train_recipe
    from semievol_lf.models.presets import get_preset

    preset = get_preset("smollm2-135m")
    r = train_recipe("fpb", preset, "warmup")
    r.update(model_name_or_path=str(model), template=preset.template, dataset_dir=str(data), dataset="fpb_labeled",
             output_dir=str(out), max_steps=steps, max_samples=rows, logging_steps=1, save_strategy="no",
             plot_loss=False, learning_rate=3e-4)
    return r


def run_setting(name: str, base: dict, overrides: dict, threads: int, work: Path) -> dict:
    out = work / name.replace(" ", "_").replace(",", "")
    r = {**base, **overrides, "output_dir": str(out)}
    path = work / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "WANDB_DISABLED": "true"}
    start = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "llamafactory-cli"), "train", str(path)],
                          capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        return {"setting": name, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1][:200], "wall_s": wall}
    results = json.loads((out / "all_results.json").read_text())
    curve = real_stats.loss_summary([json.loads(line) for line in open(out / "trainer_log.jsonl")])
    return {"setting": name, "threads": threads, "examples/s": results["train_samples_per_second"],
            "train_s": results["train_runtime"], "wall_s": wall,
            "first loss": curve["first"], "last loss": curve["last"]}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per setting (8 examples each)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--model", type=Path, default=ROOT / ".cache" / "smollm2-135m")
    args = p.parse_args(argv)

    from semievol_lf.data.prepare import prepare

    if not (args.model / "config.json").is_file():
        from semievol_lf.models.build import build_preset_model
        build_preset_model("smollm2-135m", args.model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare("fpb", RELEASED / "fpb", work / "data")
        base = recipe(args.model, work / "data", work / "out", args.steps, 64)
        for name in args.settings:
            overrides, threads = SETTINGS[name]
            print(f"{name} ...", end=" ", flush=True)
            rows.append(run_setting(name, base, overrides, threads, work))
            print(rows[-1].get("error") or f"{rows[-1]['examples/s']:.2f} examples/s", flush=True)
    first = next((r for r in rows if "examples/s" in r), None)
    print(f"\nLoRA r16 warm-up, SmolLM2-135M-Instruct, FPB, {args.steps} steps of 8 examples, lr 3e-4")
    print(f"{'setting':<16}{'threads':>8}{'ex/s':>7}{'vs first':>9}{'train s':>9}{'loss first -> last':>20}")
    for r in rows:
        if "error" in r:
            print(f"{r['setting']:<16}  failed: {r['error']}")
            continue
        speedup = r["examples/s"] / first["examples/s"]
        print(f"{r['setting']:<16}{r['threads']:>8}{r['examples/s']:>7.2f}{speedup:>8.2f}x{r['train_s']:>9.0f}"
              f"{r['first loss']:>11.3f} -> {r['last loss']:.3f}")
    return rows


if __name__ == "__main__":
    main()
