"""Kill the long steps (pseudolabel, evaluate, `semievol-lf run`) with SIGINT and SIGKILL, resume,
and compare with an uninterrupted run of the same inputs.

Most kills are exact: the fault point (`SEMIEVOL_FAULT`, semievol_lf/faults.py) stops the step
right after a planned cache chunk or trainer-log line, so every planned kill lands and the cache
holds exactly the planned rows. One randomized test kills from outside, a seeded random delay
after the caches reached a seeded random row count, so kills also hit mid-batch and mid-write.

After every kill: each JSON/JSONL/YAML file we write parses completely, each finished output
equals the uninterrupted run's, and each cache is a prefix of the uninterrupted cache (so no
finished request is ever logged twice). A SIGINT exits 130 with one "interrupted: ..." line.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import BIN, EPOCHS, ROOT, assert_stopped_by, run_cmd, still_running, trainers_started

from semievol_lf.backends.base import SORT_WINDOW

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


def launch(cmd: list, cwd: Path, log: Path, fault: str | None = None) -> subprocess.Popen:
    """Start `cmd` in its own process group (so a group kill reaches a training subprocess too)."""
    env = {**os.environ, "SEMIEVOL_FAULT": fault} if fault else None
    with open(log, "w") as err:
        return subprocess.Popen([str(a) for a in cmd], cwd=cwd, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True, env=env)


def reap(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    rc = proc.wait(timeout=500)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # nothing of ours may outlive the kill
    except ProcessLookupError:
        pass
    return rc, log.read_text(errors="replace")


def targets(rng: random.Random, total: int, chunk: int, kills: int) -> list[int]:
    """`kills` distinct random chunk boundaries, ascending, a chunk or more before the end of `total` lines."""
    bounds = list(range(chunk, total - chunk, chunk))
    return sorted(rng.sample(bounds, min(kills, len(bounds))))


def signals(rng: random.Random, n: int) -> list[int]:
    sigs = ([signal.SIGINT, signal.SIGKILL] * n)[:n]  # as many of each, in random order
    rng.shuffle(sigs)
    return sigs


def report(name, hits, checker, start):
    print(f"\n{name}: {len(hits)} kills {hits}; {checker.verified} file checks; "
          f"{len(checker.stray_tmp)} stray temp files; {time.time() - start:.0f}s")


# --------------------------------------------------------------------- exact kills (fault point)
@dataclass(frozen=True)
class Kill:
    """Stop after `stage` reached `at`: rows of the cache file `watch`, or training steps for a
    `train:NAME` stage, `watch` being its trainer log (see semievol_lf/faults.py)."""
    stage: str
    watch: str  # relative to the command's working directory
    at: int


def fault_loop(cmd: list, cwd: Path, plan: list[Kill], chunk: int, checker: Checker, seed) -> list[tuple]:
    """Run every planned kill through SEMIEVOL_FAULT, each one landing exactly, then resume to the end."""
    hits = []
    for i, (kill, sig) in enumerate(zip(plan, signals(random.Random(seed), len(plan)))):
        watch = cwd / kill.watch
        if kill.stage.startswith("train:"):
            n = kill.at  # every attempt trains from the start (no checkpoint before the last step)
        else:  # chunks this attempt must append: the cache resumes where the last kill left it
            todo = kill.at - lines(watch.parent, watch.name)
            assert todo > 0 and todo % chunk == 0, (kill, todo)
            n = todo // chunk
        fault = f"{kill.stage}:{n}:{'sigint' if sig == signal.SIGINT else 'sigkill'}"
        log = checker.out.parent / f"stderr_{i}.log"
        rc, stderr = reap(launch(cmd, cwd, log, fault), log)
        assert f"fault injected: SEMIEVOL_FAULT={fault}" in stderr, f"{fault} did not land:\n{stderr[-3000:]}"
        assert_stopped_by(sig, rc, stderr)
        if kill.stage.startswith("train:"):  # steps 1..at-1 logged (a SIGKILL may lose the last lines), not `at`
            logged, want = lines(watch.parent, watch.name), (kill.at - 1) // TRAIN_LOGGING_STEPS
            assert logged == want if sig == signal.SIGINT else logged <= want, (fault, logged)
            assert not (watch.parent / "semievol_step.json").exists()
        else:
            assert lines(watch.parent, watch.name) == kill.at, f"{fault}: the cache must end at row {kill.at}"
        hits.append((kill.stage, signal.Signals(sig).name))
        checker.check()
    run_cmd(cmd, cwd)
    checker.check(final=True)
    return hits


@dataclass(frozen=True)
class Step:
    args: list  # after `python -m`
    chunk: int  # requests per cache chunk (the hf backend: batch_size x SORT_WINDOW)
    kills: tuple  # (cache stage, kills)


STEPS = {
    # justify=disagreements: all three caches. max_new_tokens=32: the random base configurations never
    # stop early, so a batch lasts long enough for the wall-clock test's kills to land inside it.
    "pseudolabel": Step(["semievol_lf.pseudolabel", "recipes/pseudolabel_demo.yaml", "justify=disagreements",
                         "batch_size=1", "max_new_tokens=32"], SORT_WINDOW,
                        (("collaborate", 2), ("justify", 1), ("score", 1))),
    "evaluate": Step(["semievol_lf.evaluate", "recipes/evaluate_demo.yaml", "adapter_name_or_path=null",
                      "batch_size=1"], SORT_WINDOW, (("generate", 2), ("score", 2))),
}


@pytest.fixture(scope="module")
def reference(trained_sandbox):
    """name -> the uninterrupted run of STEPS[name] in the trained sandbox, made once."""
    made = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = trained_sandbox / f"saves/interrupts/{name}_ref"
            run_cmd([PY, "-m", *STEPS[name].args, f"output_dir={made[name]}"], trained_sandbox)
        return made[name]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", STEPS)
def test_step_survives_exact_kills(trained_sandbox, reference, name):
    start, box, step = time.time(), trained_sandbox, STEPS[name]
    base = [PY, "-m", *step.args]
    ref, out = reference(name), box / f"saves/interrupts/{name}_killed"
    rng, plan = random.Random(name), []
    for stage, kills in step.kills:
        watch = f"saves/interrupts/{name}_killed/cache/{stage}.jsonl"
        plan += [Kill(stage, watch, t) for t in targets(rng, lines(ref / "cache", f"{stage}.jsonl"), step.chunk, kills)]
    checker = Checker(ref, out)
    hits = fault_loop([*base, f"output_dir={out}"], box, plan, step.chunk, checker, seed=name)
    report(name, hits, checker, start)
    assert len(hits) == len(plan) >= 4 and {s for _, s in hits} == {"SIGINT", "SIGKILL"}


TRAIN_LOGGING_STEPS = 2


@pytest.mark.slow
def test_run_survives_exact_kills_in_every_step(tmp_path, tiny_model):
    """Kills land in both trainings, the baselines' and SemiEvol's evaluations and pseudo-labeling."""
    start = time.time()

    def cmd(run_dir):
        return [BIN / "semievol-lf", "run", ROOT / "recipes" / "run_demo.yaml", f"output_dir={run_dir}",
                "model=tiny", f"model_name_or_path={tiny_model}", "iterations=1", "rag=false", "batch_size=1",
                "data_sizes={n_labeled: 30, n_unlabeled: 12, n_test: 12}",
                f"train_overrides={{num_train_epochs: {EPOCHS}, logging_steps: {TRAIN_LOGGING_STEPS}}}"]

    # Both runs use the same output_dir: manifests and step markers hash the paths they are given.
    ref, out = tmp_path / "ref", tmp_path / "demo"
    run_cmd(cmd(out), tmp_path)
    out.rename(ref)
    rng = random.Random(3)

    def cache(folder: str, stage: str, kills: int) -> list[Kill]:
        return [Kill(f"{folder}/cache/{stage}", f"demo/{folder}/cache/{stage}.jsonl", t)
                for t in targets(rng, lines(ref / folder / "cache", f"{stage}.jsonl"), SORT_WINDOW, kills)]

    # Trainings take 80 steps; evaluations log 12 + 12 rows, collaborate 48, SORT_WINDOW (4) a chunk.
    # One kill per step that `run` resumes (the step tests above kill each cache stage of pseudolabel and evaluate).
    plan = [Kill("train:round_1_warmup", "demo/round_1/warmup/trainer_log.jsonl", rng.randint(5, 40)),
            *cache("eval/sft", "score", 1), *cache("round_1/pseudolabel", "collaborate", 1),
            Kill("train:round_1_evolve", "demo/round_1/evolve/trainer_log.jsonl", rng.randint(5, 40)),
            *cache("round_1/eval/semievol", "generate", 1)]
    checker = Checker(ref, out)
    hits = fault_loop(cmd(out), tmp_path, plan, SORT_WINDOW, checker, seed=3)
    report("run", hits, checker, start)
    assert len(hits) == len(plan) == 5 and {s for _, s in hits} == {"SIGINT", "SIGKILL"}
    steps = {next(s for s in ("warmup", "evolve", "pseudolabel", "eval") if s in w) for w, _ in hits}
    assert steps == {"warmup", "evolve", "pseudolabel", "eval"}
    a, b = (json.loads((d / "summary.json").read_text())["rounds"] for d in (ref, out))
    assert [{k: v["correct"] for k, v in r["results"].items()} for r in a] == \
           [{k: v["correct"] for k, v in r["results"].items()} for r in b]
    assert [r["pseudolabel"]["kept"] for r in a] == [r["pseudolabel"]["kept"] for r in b]


# ------------------------------------------------------------- a SIGTERM to the run alone (`kill PID`)
@pytest.mark.slow
def test_a_sigterm_to_the_run_alone_stops_its_trainer(tmp_path, tiny_model):
    """`kill PID`, `timeout` or a scheduler signal `semievol-lf run` alone, not the fine-tune it started: the run
    stops the trainer (none is left writing checkpoints into the folder a re-run resumes from), prints the one
    "interrupted:" line and exits 143."""
    cmd = [BIN / "semievol-lf", "run", ROOT / "recipes" / "run_demo.yaml", f"output_dir={tmp_path / 'demo'}",
           "model=tiny", f"model_name_or_path={tiny_model}", "iterations=1", "rag=false",
           "data_sizes={n_labeled: 30, n_unlabeled: 12, n_test: 12}", "train_overrides={num_train_epochs: 500}"]
    log = tmp_path / "stderr.log"
    proc = launch(cmd, tmp_path, log)
    tree = trainers_started(proc)
    proc.send_signal(signal.SIGTERM)  # to the run's process only, not to its group
    rc = proc.wait(timeout=120)
    left = still_running(tree)
    _, stderr = reap(proc, log)
    assert not left, f"still running after the run exited: {[' '.join(p.cmdline()) for p in left]}"
    assert_stopped_by(signal.SIGTERM, rc, stderr)


# --------------------------------------------------------------- randomized wall-clock kills (smoke)
def kill_after(cmd: list, cwd: Path, watch: str, target: int, delay: float, sig: int, log: Path,
               finished: Path) -> bool:
    """Start `cmd`; `delay` s after the files matching `watch` (relative to `cwd`) have grown since the
    start and hold `target` lines, send `sig` to its process group. True when it hit a running process;
    `finished` marks a completed step."""
    proc = launch(cmd, cwd, log)
    low, fire_at, deadline = None, None, time.time() + 500
    while proc.poll() is None and time.time() < deadline:
        n = lines(cwd, watch)
        low = n if low is None else min(low, n)
        if fire_at is None and n > low and n >= target:
            fire_at = time.time() + delay
        if fire_at is not None and time.time() >= fire_at:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            break
        time.sleep(0.05)
    rc, stderr = reap(proc, log)
    if rc == 0 or (rc == -signal.SIGINT and finished.is_file()):
        return False  # finished before the signal (Python restores the default SIGINT handler while exiting)
    assert_stopped_by(sig, rc, stderr)
    return True


WALL_KILLS = 2  # kills that must land: one SIGINT, one SIGKILL (the exact-kill tests above place the rest)
WALL_ATTEMPTS = 3 * WALL_KILLS  # at most: an attempt whose step finished before its kill is one more


@pytest.mark.slow
def test_pseudolabel_survives_random_wall_clock_kills(trained_sandbox, reference):
    """Kills from outside, a seeded random delay after a seeded random cache line: mid-batch, mid-write.

    The kill times follow progress, not the clock: each attempt waits until the caches hold a seeded
    random row count past what they held at its start, within their first 3/4 (so a kill that lands
    late still finds the step running), then sleeps a seeded 0-0.1 s and signals. Once the caches
    hold 3/4 of their rows, the step is resumed to its end and must equal the uninterrupted run, and
    the next attempts start over from an empty folder (after a kill, a miss is such a resumed run
    too). Attempts go on until WALL_KILLS kills have
    landed; one whose step finished before its kill (a miss) is checked like a finished run and is
    one more attempt, up to WALL_ATTEMPTS, a bound that does not depend on the machine's speed."""
    start, box = time.time(), trained_sandbox
    ref, out = reference("pseudolabel"), box / "saves/interrupts/wall_killed"
    cmd = [PY, "-m", *STEPS["pseudolabel"].args, f"output_dir={out}"]
    watch, chunk = f"{out.relative_to(box)}/cache/*.jsonl", STEPS["pseudolabel"].chunk
    limit = lines(ref / "cache", "*.jsonl") * 3 // 4
    rng, checker, hits, outcomes, resumes = random.Random(1), Checker(ref, out), [], [], 0

    def resume_to_end():
        nonlocal resumes
        run_cmd(cmd, box)
        checker.check(final=True)
        shutil.rmtree(out)
        resumes += 1

    for i in range(WALL_ATTEMPTS):
        if len(hits) == WALL_KILLS:
            break
        done = lines(out / "cache", "*.jsonl") if out.is_dir() else 0
        if done + chunk > limit:  # too near the end for the next kill: finish this one, start over
            resume_to_end()
            done = 0
        target = rng.randrange(done + chunk, limit + 1, chunk) // chunk * chunk
        sigints = sum(s == "SIGINT" for _, s in hits)  # the fewer landed so far, a seeded pick on a tie
        sig = (signal.SIGINT if 2 * sigints < len(hits) else signal.SIGKILL if 2 * sigints > len(hits)
               else rng.choice([signal.SIGINT, signal.SIGKILL]))
        if kill_after(cmd, box, watch, target, rng.uniform(0, 0.1), sig, out.parent / f"wall_stderr_{i}.log",
                      out / "stats.json"):
            hits.append((target, signal.Signals(sig).name))
            outcomes.append(f"{signal.Signals(sig).name}@{target}")
            checker.check()
        else:  # it finished: all of it must equal the uninterrupted run
            outcomes.append(f"missed@{target}")
            checker.check(final=True)
            shutil.rmtree(out)
    if out.is_dir():
        resume_to_end()
    report("wall-clock", hits, checker, start)
    print(f"attempts: {outcomes}; {resumes} resumed to the end")
    assert len(hits) == WALL_KILLS, f"{len(hits)} of {WALL_KILLS} kills landed in {WALL_ATTEMPTS} attempts: {outcomes}"
    assert {s for _, s in hits} == {"SIGINT", "SIGKILL"}


# Someone else's dataset_info.json: a merge killed at any moment leaves the old or the new file.
MERGE = """
import json, sys
from semievol_lf.llamafactory.dataset_info import merge_into
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
    from semievol_lf.llamafactory.dataset_info import merge_into

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
