"""Kill the long steps (pseudolabel, evaluate, `semievol-lf run`) with SIGINT and SIGKILL at
random points, resume, and compare with an uninterrupted run of the same inputs.

After every kill: each JSON/JSONL/YAML file we write parses completely, each finished output
equals the uninterrupted run's, and each cache is a prefix of the uninterrupted cache (so no
finished request is ever logged twice). A SIGINT exits 130 with one "interrupted: ..." line.
Kills land a seeded random number of cache lines (or trainer-log lines) after a restart, plus
a seeded random delay, so they hit mid-batch, mid-write and mid-training.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, EPOCHS, ROOT, run_cmd

PY = sys.executable
TIMING_KEYS = {"timings_s", "index_reused"}  # differ between a resumed and a straight run by design
TRAIN_DIRS = ("warmup", "evolve")  # LlamaFactory's output folders: only our marker in them is ours


def lines(root: Path, pattern: str) -> int:
    return sum(p.read_bytes().count(b"\n") for p in root.glob(pattern) if p.is_file())


def drop_timings(obj):
    if isinstance(obj, dict):
        return {k: drop_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [drop_timings(v) for v in obj]
    return obj


def our_files(root: Path) -> list[Path]:
    """JSON/JSONL/YAML files written by semievol_lf (not LlamaFactory's training logs, not temp files)."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or p.suffix not in {".json", ".jsonl", ".yaml"} or p.name.startswith("."):
            continue
        if any(part in TRAIN_DIRS for part in rel.parts[:-1]) and p.name != "semievol_step.json":
            continue
        out.append(p)
    return out


class Checker:
    """Compares a killed run's folder with an uninterrupted run's, file by file."""

    def __init__(self, ref: Path, out: Path):
        self.ref, self.out = ref, out
        self.verified = 0  # file checks done
        self.stray_tmp = set()

    def expected(self, rel: Path) -> str:
        return (self.ref / rel).read_text().replace(str(self.ref), str(self.out))  # for output_dir= paths

    def check(self, final: bool = False) -> None:
        files = our_files(self.out)
        for p in files:
            rel = p.relative_to(self.out)
            text = p.read_text()
            if p.suffix == ".jsonl":
                assert text == "" or text.endswith("\n"), f"{rel}: torn last line"
                rows = [json.loads(line) for line in text.splitlines()]
            elif p.suffix == ".json":
                rows = json.loads(text)
            else:
                yaml.safe_load(text)
                continue
            if not (self.ref / rel).is_file():
                continue
            want = self.expected(rel)
            if rel.parent.name == "cache":  # resumed caches grow in the same chunks, in the same order
                keys = [r["key"] for r in rows]
                assert len(keys) == len(set(keys)), f"{rel}: a finished request was logged twice"
                assert want.startswith(text), f"{rel}: not a prefix of the uninterrupted cache"
                assert not final or text == want, f"{rel}: {len(keys)} rows, want {want.count(chr(10))}"
            elif rel.name in ("stats.json", "summary.json"):
                assert drop_timings(rows) == drop_timings(json.loads(want)), rel
            else:
                assert text == want, f"{rel} differs from the uninterrupted run's"
            self.verified += 1
        self.stray_tmp |= {p.relative_to(self.out) for p in self.out.rglob("*.tmp")}
        if final:
            ours = {p.relative_to(self.out) for p in files}
            theirs = {p.relative_to(self.ref) for p in our_files(self.ref)}
            assert ours == theirs, f"missing {theirs - ours}, extra {ours - theirs}"


def kill_after(cmd: list, cwd: Path, watch: str, target: int, delay: float, sig: int, log: Path,
               finished: Path) -> bool:
    """Start `cmd`; `delay` s after the files matching `watch` (relative to `cwd`) have grown since the
    start and hold `target` lines, send `sig` to its process group (Ctrl-C reaches the training
    subprocess too). True when it hit a running process; `finished` marks a completed step."""
    with open(log, "w") as err:
        proc = subprocess.Popen([str(a) for a in cmd], cwd=cwd, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    low, fire_at, deadline = None, None, time.time() + 500
    while proc.poll() is None and time.time() < deadline:
        n = lines(cwd, watch)
        low = n if low is None else min(low, n)  # a restarted training first deletes its old log
        if fire_at is None and n > low and n >= target:
            fire_at = time.time() + delay
        if fire_at is not None and time.time() >= fire_at:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            break
        time.sleep(0.05)
    rc = proc.wait(timeout=120)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # nothing of ours may outlive the kill
    except ProcessLookupError:
        pass
    stderr = log.read_text(errors="replace")
    if rc == 0 or (rc == -signal.SIGINT and finished.is_file()):
        return False  # finished before the signal (Python restores the default SIGINT handler while exiting)
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL, stderr[-3000:]
    else:
        assert rc == 130 and "Traceback" not in stderr, stderr[-3000:]
        assert stderr.strip().splitlines()[-1].startswith("interrupted: finished work is saved"), stderr[-3000:]
    return True


def kill_loop(cmd, cwd: Path, plan: list[tuple[str, int]], checker: Checker, seed: int,
              finished: str) -> list[tuple[str, str]]:
    """Run `plan` [(watched glob, target lines)] with seeded delays (within about a batch) and signals;
    resume to the end; check. A kill that misses has let the step finish, which would make every later
    kill a no-op on a fast machine: the next attempt then starts over from an empty output folder."""
    rng = random.Random(seed)
    sigs = ([signal.SIGINT, signal.SIGKILL] * len(plan))[:len(plan)]  # as many of each, in random order
    rng.shuffle(sigs)
    hits = []
    for i, (watch, target) in enumerate(plan):
        sig = sigs[i]
        if kill_after(cmd, cwd, watch, target, rng.uniform(0, 0.1), sig, checker.out.parent / f"stderr_{i}.log",
                      checker.out / finished):
            hits.append((watch, signal.Signals(sig).name))
            checker.check()
        else:
            checker.check(final=True)  # it finished: all of it must equal the uninterrupted run
            if i + 1 < len(plan):
                shutil.rmtree(checker.out)
    run_cmd(cmd, cwd)
    checker.check(final=True)
    return hits


def targets(rng: random.Random, total: int, chunk: int, kills: int) -> list[int]:
    """`kills` distinct random chunk boundaries, ascending, a chunk or more before the end of `total` lines."""
    bounds = list(range(chunk, total - chunk, chunk))
    return sorted(rng.sample(bounds, min(kills, len(bounds))))


def report(name, hits, checker, start):
    print(f"\n{name}: {len(hits)} kills {hits}; {checker.verified} file checks; "
          f"{len(checker.stray_tmp)} stray temp files; {time.time() - start:.0f}s")


# Pseudolabel and evaluate: 3 caches / 2 caches, batch 4 / 2, so many chunks per stage.
@pytest.mark.slow
def test_pseudolabel_survives_kills(trained_sandbox):
    start = time.time()
    box = trained_sandbox
    # max_new_tokens=32: the random base configurations never stop early, so each batch takes long
    # enough for a kill to land inside the step even on an idle machine.
    base = [PY, "-m", "semievol_lf.pseudolabel", "recipes/pseudolabel_demo.yaml", "justify=disagreements",
            "batch_size=4", "max_new_tokens=32"]
    run_cmd([*base, "output_dir=saves/interrupts/pl_ref"], box)
    ref, out = box / "saves/interrupts/pl_ref", box / "saves/interrupts/pl_killed"
    rng = random.Random(1)
    plan = []
    # Extra collaborate kills: the short justify and score stages may finish inside a kill's delay
    # on a fast machine, so the long stage carries the count.
    for name, kills in (("collaborate", 7), ("justify", 2), ("score", 2)):
        plan += [(f"saves/interrupts/pl_killed/cache/{name}.jsonl", k)
                 for k in targets(rng, lines(ref, f"cache/{name}.jsonl"), 4, kills)]
    checker = Checker(ref, out)
    hits = kill_loop([*base, f"output_dir={out}"], box, plan, checker, seed=1, finished="stats.json")
    report("pseudolabel", hits, checker, start)
    assert len(hits) >= 6 and {s for _, s in hits} == {"SIGINT", "SIGKILL"}
    assert "collaborate" in {Path(w).stem for w, _ in hits}  # justify and score are short: may finish first


@pytest.mark.slow
def test_evaluate_survives_kills(trained_sandbox):
    start = time.time()
    box = trained_sandbox
    # The untrained base never stops early: 32 tokens a question keep each batch long enough to be hit.
    base = [PY, "-m", "semievol_lf.evaluate", "recipes/evaluate_demo.yaml", "adapter_name_or_path=null",
            "batch_size=2", "max_new_tokens=32"]
    run_cmd([*base, "output_dir=saves/interrupts/ev_ref"], box)
    ref, out = box / "saves/interrupts/ev_ref", box / "saves/interrupts/ev_killed"
    rng = random.Random(2)
    plan = []
    for name, kills in (("generate", 7), ("score", 2)):
        plan += [(f"saves/interrupts/ev_killed/cache/{name}.jsonl", k)
                 for k in targets(rng, lines(ref, f"cache/{name}.jsonl"), 2, kills)]
    checker = Checker(ref, out)
    hits = kill_loop([*base, f"output_dir={out}"], box, plan, checker, seed=2, finished="results.json")
    report("evaluate", hits, checker, start)
    # Evaluate is short (24 generations in about 0.3 s), so kills do miss; each miss restarts the step
    # (kill_loop), and 6 of the 9 landed in runs on an idle machine.
    assert len(hits) >= 2 and {s for _, s in hits} == {"SIGINT", "SIGKILL"}


@pytest.mark.slow
def test_run_survives_kills_in_every_step(tmp_path, tiny_model):
    """Kills land in both trainings, the baselines' and SemiEvol's evaluations and pseudo-labeling."""
    start = time.time()

    def cmd(run_dir):
        return [BIN / "semievol-lf", "run", ROOT / "recipes" / "run_demo.yaml", f"run_dir={run_dir}",
                "model=tiny", f"model_name_or_path={tiny_model}", "iterations=1", "rag=false", "batch_size=2",
                "data_sizes={n_labeled: 30, n_unlabeled: 12, n_test: 12}", "max_new_tokens=32",
                f"train_overrides={{num_train_epochs: {EPOCHS}, logging_steps: 2}}"]

    # Both runs use the same run_dir: manifests and step markers hash the paths they are given.
    ref, out = tmp_path / "ref", tmp_path / "demo"
    run_cmd(cmd(out), tmp_path)
    out.rename(ref)
    rng = random.Random(3)
    # Trainer logs get a line every 2 of 80 steps; evaluations log 12 + 12 rows, collaborate 48, 2 a batch.
    plan = [("demo/round_1/warmup/trainer_log.jsonl", rng.randint(3, 20)),
            ("demo/eval/vanilla/cache/*.jsonl", rng.randrange(2, 20, 2)),
            ("demo/eval/sft/cache/*.jsonl", rng.randrange(2, 20, 2)),
            *[("demo/round_1/pseudolabel/cache/*.jsonl", t) for t in targets(rng, 48, 2, 3)],
            ("demo/round_1/evolve/trainer_log.jsonl", rng.randint(3, 20)),
            ("demo/round_1/eval/semievol/cache/*.jsonl", rng.randrange(2, 20, 2))]
    checker = Checker(ref, out)
    hits = kill_loop(cmd(out), tmp_path, plan, checker, seed=3, finished="summary.json")
    report("run", hits, checker, start)
    assert len(hits) >= 6 and {s for _, s in hits} == {"SIGINT", "SIGKILL"}
    steps = {next(s for s in ("warmup", "evolve", "pseudolabel", "eval") if f"/{s}/" in w) for w, _ in hits}
    assert steps == {"warmup", "evolve", "pseudolabel", "eval"}
    a, b = (json.loads((d / "summary.json").read_text())["rounds"] for d in (ref, out))
    assert [{k: v["correct"] for k, v in r["results"].items()} for r in a] == \
           [{k: v["correct"] for k, v in r["results"].items()} for r in b]
    assert [r["pseudolabel"]["kept"] for r in a] == [r["pseudolabel"]["kept"] for r in b]


# Someone else's dataset_info.json: a merge killed at any moment leaves the old or the new file.
MERGE = """
import json, sys
from semievol_lf.data_info import merge_into
entries = json.load(open(sys.argv[2]))
print("ready", flush=True)
merge_into(sys.argv[1], entries)
"""


def _start_merge(target: Path, entries: Path) -> subprocess.Popen:
    proc = subprocess.Popen([PY, "-c", MERGE, str(target), str(entries)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


@pytest.mark.slow
def test_merge_killed_at_random_moments_leaves_old_or_new_file(tmp_path):
    target, backup, entries = tmp_path / "dataset_info.json", tmp_path / "dataset_info.json.bak", tmp_path / "new.json"
    theirs = {f"theirs_{i}": {"file_name": f"theirs_{i}.json", "columns": {"prompt": "q", "response": "a"}}
              for i in range(20000)}
    old = json.dumps(theirs, indent=2)
    entries.write_text(json.dumps({f"ours_{i}": {"file_name": f"/abs/ours_{i}.json"} for i in range(20000)}))
    target.write_text(old)
    t0 = time.time()
    _start_merge(target, entries).wait()
    took = time.time() - t0
    new = target.read_text()
    assert json.loads(new).keys() >= theirs.keys()
    rng, outcomes = random.Random(4), {"old": 0, "old+backup": 0, "new": 0}
    for _ in range(30):
        target.write_text(old)
        backup.unlink(missing_ok=True)
        proc = _start_merge(target, entries)
        time.sleep(rng.uniform(0, 1.2 * took))
        proc.kill()
        proc.wait()
        text = target.read_text()
        assert text in (old, new), "target is neither the old nor the new file"
        if backup.exists():
            assert backup.read_text() == old, "half-written backup"
        assert text == old or backup.exists(), "new file without a backup of the old one"
        outcomes["new" if text == new else "old+backup" if backup.exists() else "old"] += 1
    print(f"\nmerge kills: {outcomes} (one merge {took:.2f}s); stray temp files: "
          f"{[p.name for p in tmp_path.glob('.*.tmp')]}")
    assert outcomes["new"] and outcomes["old"] + outcomes["old+backup"]


def test_merge_keeps_the_mode_of_their_file(tmp_path):
    from semievol_lf.data_info import merge_into

    target = tmp_path / "dataset_info.json"
    target.write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    target.chmod(0o664)
    merge_into(target, {"demo_labeled": {"file_name": "/abs/labeled.json"}})
    assert target.stat().st_mode & 0o777 == 0o664  # group-shared LlamaFactory setups stay readable
    assert (tmp_path / "dataset_info.json.bak").stat().st_mode & 0o777 == 0o664


def test_retrained_adapter_keeps_its_digest(tmp_path):
    """PEFT lists `target_modules` in a per-process order; identical weights must give one digest."""
    from semievol_lf.io_utils import file_digest

    for name, modules in (("a", ["q_proj", "k_proj", "up_proj"]), ("b", ["up_proj", "q_proj", "k_proj"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({"r": 16, "target_modules": modules}))
        (tmp_path / name / "adapter_model.safetensors").write_bytes(b"weights")
    assert file_digest(tmp_path / "a") == file_digest(tmp_path / "b")
