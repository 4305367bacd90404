"""A full disk and a read-only output folder: one clear error line (exit 2, no traceback), and
the files that were there before are left as they were.

The tests run as root, so permission bits stop nothing. A full disk is simulated with
RLIMIT_FSIZE (SIGXFSZ ignored): a write past the limit fails with EFBIG, like ENOSPC, after
writing what fits. A read-only folder is a read-only bind mount in a private mount namespace
(`unshare --mount`), skipped where that is not permitted.
"""

import json
import resource
import shutil
import signal
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
from conftest import BIN, TEST_SIZES

from semievol_lf.backends.base import SORT_WINDOW

PY = sys.executable


def disk_full_at(limit: int):
    """preexec_fn: files can grow to `limit` bytes, then writes fail with EFBIG."""
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def read_only(folder: Path, cmd: list) -> list:
    """`cmd` run with `folder` mounted read-only, in a mount namespace of its own."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'd=$1; shift; mount --bind -o ro "$d" "$d" && exec "$@"', "sh", str(folder), *map(str, cmd)]


@lru_cache(maxsize=1)
def _read_only_mounts_work() -> bool:
    probe = Path("/tmp") / "semievol_ro_probe"
    probe.mkdir(exist_ok=True)
    proc = subprocess.run(read_only(probe, ["touch", probe / "x"]), check=False, capture_output=True, text=True)
    (probe / "x").unlink(missing_ok=True)
    return "Read-only file system" in proc.stderr


needs_ro_mount = pytest.mark.skipif(
    shutil.which("unshare") is None or not _read_only_mounts_work(),
    reason="a read-only folder needs `unshare --mount` and `mount --bind -o ro` (CAP_SYS_ADMIN), "
           "not permitted here; root ignores permission bits, so there is no other way to make one")


def run(cmd: list, cwd: Path, limit: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in cmd], check=False, cwd=cwd, capture_output=True, text=True,
                          preexec_fn=disk_full_at(limit) if limit else None)


def assert_one_line_error(proc, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr[-3000:]
    assert all(f in errors[0] for f in fragments), errors[0]
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def prepare_cmd(source: Path, out: Path) -> list:
    return [BIN / "semievol-lf", "prepare", "--task", "demo", "--source", source, "--out", out]


@pytest.fixture
def prepared(tmp_path, demo_source):
    """A prepared data folder, and a second source (other seed) to re-prepare it from."""
    from semievol_lf.data.demo import DemoSpec, write_demo_data

    out = tmp_path / "data"
    assert run(prepare_cmd(demo_source, out), tmp_path).returncode == 0
    other = write_demo_data(tmp_path / "other", DemoSpec(seed=1, **TEST_SIZES))
    return out, other


def test_prepare_on_a_full_disk_keeps_the_previous_files(prepared, tmp_path):
    out, other = prepared
    before = snapshot(out)
    proc = run(prepare_cmd(other, out), tmp_path, limit=1000)
    assert_one_line_error(proc, f"cannot write {out / 'labeled.json'}", "File too large")
    assert snapshot(out) == before  # no half file, no temp file left
    assert run(prepare_cmd(other, out), tmp_path).returncode == 0  # space freed: it goes through
    assert snapshot(out) != before


def test_prepare_failing_at_a_later_file_keeps_all_previous_files(prepared, tmp_path):
    from semievol_lf.data.demo import DemoSpec, write_demo_data

    out, _ = prepared
    big_unlabeled = write_demo_data(tmp_path / "big", DemoSpec(seed=2, n_labeled=8, n_unlabeled=60, n_test=8))
    before = snapshot(out)
    proc = run(prepare_cmd(big_unlabeled, out), tmp_path, limit=len(before["labeled.json"]) + 1000)
    assert_one_line_error(proc, "unlabeled.json", "File too large")
    assert snapshot(out) == before


@needs_ro_mount
def test_prepare_into_a_read_only_folder(prepared, tmp_path):
    out, other = prepared
    before = snapshot(out)
    proc = run(read_only(out, prepare_cmd(other, out)), tmp_path)
    assert_one_line_error(proc, f"cannot write {out / 'labeled.json'}", "Read-only file system")
    assert snapshot(out) == before


# data-info merge into someone else's dataset_info.json
@pytest.fixture
def their_setup(tmp_path):
    target = tmp_path / "LLaMA-Factory" / "data" / "dataset_info.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps({f"theirs_{i}": {"file_name": f"t{i}.json"} for i in range(60)}, indent=2))
    return target


def merge_cmd(target: Path) -> list:
    return [BIN / "semievol-lf", "data-info", "merge", "--into", target]


def test_merge_on_a_full_disk_keeps_their_file(their_setup, tmp_path):
    target = their_setup
    old = target.read_text()
    # Room for the backup, not for the merged file.
    proc = run(merge_cmd(target), tmp_path, limit=len(old) + 100)
    assert_one_line_error(proc, f"cannot write {target}", "File too large")
    assert target.read_text() == old
    assert target.with_name("dataset_info.json.bak").read_text() == old
    # No room even for the backup.
    target.with_name("dataset_info.json.bak").unlink()
    proc = run(merge_cmd(target), tmp_path, limit=len(old) // 2)
    assert_one_line_error(proc, f"cannot back up {target}", "File too large")
    assert snapshot(target.parent) == {"dataset_info.json": old.encode()}  # no half backup, no temp file


@needs_ro_mount
def test_merge_into_a_read_only_folder(their_setup, tmp_path):
    target = their_setup
    old = target.read_text()
    proc = run(read_only(target.parent, merge_cmd(target)), tmp_path)
    assert_one_line_error(proc, f"cannot back up {target}", "Read-only file system")
    assert snapshot(target.parent) == {"dataset_info.json": old.encode()}


# pseudolabel: caches, index and final outputs on a full disk
PSEUDOLABEL = [PY, "-m", "semievol_lf.pseudolabel", "recipes/pseudolabel_demo.yaml", "justify=vote", "batch_size=1"]
OUTPUTS = ("candidates.jsonl", "selected.json", "selected_ids.json", "dataset_info.json")


@pytest.mark.slow
def test_pseudolabel_on_a_full_disk_stops_cleanly_and_resumes(trained_sandbox):
    box = trained_sandbox
    ref, out = box / "saves/disk/ref", box / "saves/disk/full"
    assert run([*PSEUDOLABEL, f"output_dir={ref}"], box).returncode == 0
    shutil.copytree(ref, out)
    shutil.rmtree(out / "cache")
    (out / "stats.json").unlink()
    before = snapshot(out)

    # The collaborate cache outgrows the disk mid-batch: the error names it, the log keeps whole batches.
    proc = run([*PSEUDOLABEL, f"output_dir={out}"], box, limit=2500)
    assert_one_line_error(proc, f"cannot write {out / 'cache/collaborate.jsonl'}", "File too large")
    cache = (out / "cache/collaborate.jsonl").read_text()
    assert cache.endswith("\n") and cache.count("\n") % SORT_WINDOW == 0 and 0 < cache.count("\n") < 96
    assert (ref / "cache/collaborate.jsonl").read_text().startswith(cache)
    assert {k: v for k, v in snapshot(out).items() if not k.startswith("cache/")} == before

    # Space freed: it resumes, computes each request once, and ends where a straight run ends.
    assert run([*PSEUDOLABEL, f"output_dir={out}"], box).returncode == 0
    for name in ("cache/collaborate.jsonl", "cache/score.jsonl", *OUTPUTS):
        assert (out / name).read_text() == (ref / name).read_text(), name

    # Full again while writing the outputs: the previous outputs stay whole, no temp file is left.
    (out / "stats.json").unlink()
    before = snapshot(out)
    proc = run([*PSEUDOLABEL, f"output_dir={out}"], box, limit=4000)
    assert_one_line_error(proc, f"cannot write {out / 'candidates.jsonl'}", "File too large")
    assert snapshot(out) == before


@pytest.mark.slow
def test_pseudolabel_index_on_a_full_disk(trained_sandbox):
    out = trained_sandbox / "saves/disk/index"
    proc = run([*PSEUDOLABEL, f"output_dir={out}"], trained_sandbox, limit=3000)
    assert_one_line_error(proc, "labeled.faiss", "File too large")


@pytest.mark.slow
@needs_ro_mount
def test_pseudolabel_into_a_read_only_folder(trained_sandbox, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    proc = run(read_only(ro, [*PSEUDOLABEL, f"output_dir={ro / 'new' / 'out'}"]), trained_sandbox)
    assert_one_line_error(proc, f"cannot write {ro / 'new' / 'out' / 'manifest.json'}", "Read-only file system")
    assert not any(ro.iterdir())
