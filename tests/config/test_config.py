import pytest

from semievol_lf.config import PseudolabelArguments, RunArguments, build_config, load_config, parse_overrides
from semievol_lf.errors import UserError

RECIPE = """\
### model
model_name_or_path: m
adapter_name_or_path: a
### dataset
data_dir: d
### method
theta: 0.3
### output
output_dir: o
"""


def test_overrides_split_on_the_first_equals_and_parse_yaml():
    assert parse_overrides(["theta=0.25", "output_dir=a=b", "shots=[0, 1]", "justify=vote"]) == {
        "theta": 0.25, "output_dir": "a=b", "shots": [0, 1], "justify": "vote"}
    with pytest.raises(UserError, match="not of the form key=value"):
        parse_overrides(["theta"])


def test_recipe_then_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    cfg = load_config(PseudolabelArguments, [str(path), "theta=0.7", "shots=0,2"])
    assert (cfg.theta, cfg.shots, cfg.output_dir) == (0.7, [0, 2], "o")


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE + "thetta: 0.5\n")
    with pytest.raises(UserError, match=r"r.yaml:10: unknown key `thetta`. Did you mean `theta`\? Known keys: "):
        load_config(PseudolabelArguments, [str(path)])


def test_a_renamed_key_names_file_line_and_its_new_name(tmp_path):
    """One name for one thing: the folder a command writes is `output_dir` everywhere. An old key is refused
    (never read silently, never a did-you-mean guess), before an unknown key of the same recipe."""
    from semievol_lf.config.parser import RENAMED

    path = tmp_path / "run.yaml"
    path.write_text("task: demo\nrun_dir: runs/x\nthetta: 0.5\n")
    with pytest.raises(UserError) as err:
        load_config(RunArguments, [str(path)])
    assert str(err.value) == f"{path}:2: `run_dir` was renamed `output_dir`"
    with pytest.raises(UserError, match=r"^command line: `run_dir` was renamed `output_dir`$"):
        load_config(RunArguments, [str(path), "run_dir=y"])
    path.write_text("task: demo\noutput_dir: runs/x\n")
    assert load_config(RunArguments, [str(path)]).output_dir == "runs/x"
    # `k` is a setting of SemiEvol (ICP neighbours) and of the step configs: only METEOR's was renamed
    assert ("RunArguments", "k") not in RENAMED and ("PseudolabelArguments", "k") not in RENAMED
    assert set(RENAMED.values()) == {"output_dir", "num_samples", "max_revisions", "preference_rule", "max_new_tokens"}


def test_bad_type_and_bad_combination(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    with pytest.raises(UserError, match=r"command line: `n: 'four'`: expected an integer"):
        load_config(PseudolabelArguments, [str(path), "n=four"])
    with pytest.raises(UserError, match=r"`justify: 'maybe'`: expected one of"):
        load_config(PseudolabelArguments, [str(path), "justify=maybe"])
    with pytest.raises(UserError, match=r"`n` must be between 1 and 8"):
        load_config(PseudolabelArguments, [str(path), "n=9"])
    with pytest.raises(UserError, match=r"`shots` asks for 3 examples but `k` retrieves only 2"):
        load_config(PseudolabelArguments, [str(path), "k=2"])


def test_missing_required_key():
    with pytest.raises(UserError, match="`model_name_or_path` is required"):
        build_config(PseudolabelArguments, {"data_dir": "d", "output_dir": "o"})
