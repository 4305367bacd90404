"""Data-parallel pseudo-labeling: shards label, one merge selects over their union.

End to end on the demo task like test_pseudolabel.py (real warm-up, FAISS, MiniLM, hf backend).
"""

import json
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, run_cmd

PY = sys.executable
RECIPE = "recipes/pseudolabel_demo.yaml"
# What an unsharded run writes that a merge must reproduce byte for byte (stats.json holds timings).
SAME_FILES = ("candidates.jsonl", "selected.json", "selected_ids.json", "dataset_info.json", "manifest.json")


def pseudolabel(box, *overrides, check=True):
    return run_cmd([PY, "-m", "semievol_lf.pseudolabel", RECIPE, *overrides], cwd=box, check=check)


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def refused(proc, *needles):
    """One error line, exit status 2, no traceback; returns the line."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    (line,) = proc.stderr.splitlines()
    for needle in needles:
        assert needle in line, line
    return line


def copy_shard(src, dst, i):
    """Shards hold no output_dir in their manifest, so a finished shard can seed another merge."""
    shutil.copytree(src / f"shards/{i}-of-2", dst / f"shards/{i}-of-2")


@pytest.fixture(scope="module")
def sharded(trained_sandbox):
    """The recipe (justify all) unsharded, and as 2 shards run side by side like 2 GPUs, then merged."""
    box, ref, out = trained_sandbox, "saves/shards/unsharded", "saves/shards/merged"
    shards = [subprocess.Popen([PY, "-m", "semievol_lf.pseudolabel", RECIPE, f"output_dir={out}", "num_shards=2",
                                f"shard={i}"], cwd=box, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in (0, 1)]
    pseudolabel(box, f"output_dir={ref}")
    printed = []
    for proc in shards:
        stdout, stderr = proc.communicate()
        assert proc.returncode == 0, stderr[-3000:]
        printed.append(stdout)
    merge = pseudolabel(box, f"output_dir={out}", "num_shards=2")
    return {"box": box, "ref": box / ref, "out": box / out, "shard_stdout": printed, "merge_stdout": merge.stdout}


@pytest.mark.slow
def test_merged_shards_equal_the_unsharded_run(sharded):
    ref, out, box = sharded["ref"], sharded["out"], sharded["box"]
    parts = [[r["id"] for r in read_jsonl(out / f"shards/{i}-of-2/samples.jsonl")] for i in (0, 1)]
    unlabeled = [r["id"] for r in json.loads((box / "data/demo/unlabeled.json").read_text())]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(unlabeled) and len(parts[0]) == len(parts[1]) == len(unlabeled) // 2

    a, b = read_jsonl(ref / "candidates.jsonl"), read_jsonl(out / "candidates.jsonl")
    assert [r["id"] for r in b] == unlabeled  # the unlabeled file's order, not shard by shard
    assert [(r["id"], r["pseudo_answer"], r["kept"], r["candidates"]) for r in a] == \
           [(r["id"], r["pseudo_answer"], r["kept"], r["candidates"]) for r in b]
    assert [r["entropy"] for r in b] == pytest.approx([r["entropy"] for r in a], abs=1e-5)
    assert json.loads((out / "selected_ids.json").read_text()) == json.loads((ref / "selected_ids.json").read_text())
    for name in SAME_FILES:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name

    stats, ref_stats = (json.loads((d / "stats.json").read_text()) for d in (out, ref))
    assert stats.pop("shards") == 2 and "shards" not in ref_stats
    assert stats.pop("timings_s").keys() == ref_stats.pop("timings_s").keys()
    assert stats.pop("index_reused") is ref_stats.pop("index_reused") is False
    assert stats == ref_stats and stats["kept"] > 0

    merge_cmd = f"python -m semievol_lf.pseudolabel {RECIPE} output_dir=saves/shards/merged num_shards=2"
    assert all(merge_cmd in s.splitlines()[-1] for s in sharded["shard_stdout"])
    # Finished work is not redone: the merge and a shard both say so.
    assert "already holds the merged result" in pseudolabel(box, "output_dir=saves/shards/merged",
                                                            "num_shards=2").stdout
    assert "already holds this finished shard" in pseudolabel(box, "output_dir=saves/shards/merged", "num_shards=2",
                                                              "shard=1").stdout


@pytest.mark.slow
def test_theta_is_read_only_by_the_merge(sharded):
    box, out = sharded["box"], sharded["box"] / "saves/shards/theta"
    for i in (0, 1):
        copy_shard(sharded["out"], out, i)
    pseudolabel(box, f"output_dir={out}", "num_shards=2")
    refused(pseudolabel(box, f"output_dir={out}", "num_shards=2", "theta=0.3", check=False), "changed: selection")
    pseudolabel(box, f"output_dir={out}", "num_shards=2", "theta=0.3", "overwrite_output_dir=true")
    rows = read_jsonl(out / "candidates.jsonl")
    h = [r["entropy"] for r in rows if r["pseudo_answer"] != "[no answer]"]
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["theta"], stats["shards"]) == (0.3, 2)
    assert stats["tau"] == pytest.approx(np.percentile(h, 30))
    assert stats["kept"] == sum(x <= stats["tau"] for x in h) == sum(r["kept"] for r in rows)
    for i in (0, 1):  # the shards were not touched
        shard = f"shards/{i}-of-2/samples.jsonl"
        assert (out / shard).read_bytes() == (sharded["out"] / shard).read_bytes()


@pytest.mark.slow
def test_merge_names_missing_and_unfinished_shards(sharded):
    box, rel = sharded["box"], "saves/shards/partial"
    out = box / rel
    line = refused(pseudolabel(box, f"output_dir={rel}", "num_shards=2", check=False), "0-of-2, 1-of-2",
                   f"for i in 0 1; do python -m semievol_lf.pseudolabel {RECIPE} output_dir={rel} num_shards=2 "
                   "shard=$i; done")
    assert "missing or unfinished" in line

    copy_shard(sharded["out"], out, 0)
    copy_shard(sharded["out"], out, 1)
    (out / "shards/1-of-2/samples.jsonl").unlink()  # as if shard 1 was killed after its last model call
    line = refused(pseudolabel(box, f"output_dir={rel}", "num_shards=2", check=False), "shard 1-of-2")
    assert "0-of-2" not in line and not (out / "selected.json").exists() and not (out / "manifest.json").exists()

    # The command the error names resumes the shard from its caches: nothing is computed again.
    command = line.split("run it: ")[1]
    assert command == f"python -m semievol_lf.pseudolabel {RECIPE} output_dir={rel} num_shards=2 shard=1"
    caches = {p: p.read_bytes() for p in (out / "shards/1-of-2/cache").glob("*.jsonl")}
    run_cmd([PY, *shlex.split(command)[1:]], cwd=box)
    assert caches and all(p.read_bytes() == data for p, data in caches.items())
    pseudolabel(box, f"output_dir={rel}", "num_shards=2")
    assert (out / "selected.json").read_bytes() == (sharded["ref"] / "selected.json").read_bytes()


@pytest.mark.slow
def test_merge_refuses_a_shard_made_with_other_settings(sharded):
    box, rel = sharded["box"], "saves/shards/mixed"
    out = box / rel
    copy_shard(sharded["out"], out, 0)
    pseudolabel(box, f"output_dir={rel}", "num_shards=2", "shard=1", "seed=7")  # samples other responses
    line = refused(pseudolabel(box, f"output_dir={rel}", "num_shards=2", check=False),
                   f"{rel}/shards/1-of-2 was made from other inputs than this merge (changed: settings)",
                   "shard=1 overwrite_output_dir=true")
    assert "0-of-2" not in line and not (out / "selected.json").exists()


@pytest.mark.parametrize("overrides, message", [
    (["num_shards=0"], "`num_shards` must be >= 1, got 0"),
    (["num_shards=2", "shard=2"], "`shard` must be in [0, `num_shards`) = [0, 2), got 2"),
    (["num_shards=2", "shard=-1"], "`shard` must be in [0, `num_shards`) = [0, 2), got -1"),
    (["shard=0"], "`shard` is set but `num_shards` is 1"),
    (["num_shards=two"], "`num_shards: 'two'`: expected an integer"),
])
def test_bad_shard_settings_are_refused(tmp_path, overrides, message):
    """Checked before any input is read or folder written, so the repository's own recipe serves."""
    out = tmp_path / "out"
    refused(run_cmd([PY, "-m", "semievol_lf.pseudolabel", RECIPE, f"output_dir={out}", *overrides], cwd=ROOT,
                    check=False), message)
    assert not out.exists()
