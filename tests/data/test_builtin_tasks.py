"""The built-in tasks, now data files (templates/tasks/), give byte-identical prepared data and
warm-up / evolve recipes to the Python registry they replaced (digests recorded at 02abe66 by
tests/fixtures/builtin_outputs.py, before the move)."""

import json

import pytest
from fixtures.builtin_outputs import BASELINE, RELEASED, digests, released_root


def test_builtin_tasks_prepare_and_train_exactly_as_before(tmp_path):
    expected = json.loads(BASELINE.read_text())
    got = digests(tmp_path)
    if released_root() is None:  # CI has the released data; a machine without it checks the rest
        expected = {k: v for k, v in expected.items() if k.split("/")[0] not in RELEASED}
    assert sorted(got) == sorted(expected)
    changed = [name for name in expected if got[name] != expected[name]]
    assert not changed, f"differs from before the move: {changed}"


def test_every_builtin_task_is_a_file_pair():
    from semievol_lf.data.tasks import builtin_tasks, get_task

    names = builtin_tasks()
    assert names == sorted(["arc", "convfinqa", "demo", "fpb", "mmlu", "mmlu_pro", "pubmedqa", "usmle"])
    for name in names:
        task = get_task(name)
        assert task.name == name and task.prompt.name == f"{name}.jinja" and task.prompt.is_file()


@pytest.mark.parametrize("name", ["mmlu", "convfinqa"])
def test_a_builtin_task_named_by_its_path_is_the_same_task(name):
    from semievol_lf.data.tasks import builtin_dir, get_task

    assert get_task(str(builtin_dir() / f"{name}.yaml")) == get_task(name)
