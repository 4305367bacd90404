"""`export-chat-format`: prompts rendered without LlamaFactory give LlamaFactory's own token ids.

The exported side runs in a subprocess where `import llamafactory` fails, as in a vLLM-only
environment; its ids are compared with `encode_oneturn` of the real template in this process.
"""

import json
import sys

import pytest
from conftest import run_cmd

PY = sys.executable
# Run a module with LlamaFactory made unimportable (sys.modules[name] = None blocks the import).
NO_LF = ("import sys, runpy; sys.modules['llamafactory'] = None; sys.argv = sys.argv[1:]; "
         "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")
# default (the demo's), plain chat formats, and a reasoning template that adds an empty thought.
TEMPLATES = ["default", "llama3", "qwen", "qwen3", "gemma2", "mistral", "llama2"]
RENDER = """
import json, sys
sys.modules["llamafactory"] = None
from semievol_lf.llamafactory.chat_format import ExportedChatFormat
pairs = json.load(open(sys.argv[1]))
out = {}
for name in sys.argv[2:]:
    fmt = ExportedChatFormat(name)
    out[name] = {"encoded": [fmt.encode(p, r) for p, r in pairs], "stop_ids": list(fmt.stop_ids),
                 "decoded": fmt.decode(fmt.encode(pairs[0][0])[0])}
print(json.dumps(out))
"""


def demo_pairs(data_dir) -> list[tuple[str, str]]:
    """Every kind of prompt the steps render for the demo task, with and without a response."""
    from semievol_lf.data.loading import load_prepared_split
    from semievol_lf.data.prompts import icp_prompt, justify_prompt, task_prompt
    from semievol_lf.data.tasks import get_task

    task = get_task("demo")
    labeled = load_prepared_split(data_dir, task, "labeled")
    unlabeled = load_prepared_split(data_dir, task, "unlabeled")[:4]
    pairs = [(task_prompt(task, u), "") for u in unlabeled]
    pairs += [(icp_prompt(task, u, labeled[:3]), "") for u in unlabeled]
    pairs += [(justify_prompt(task, u, ["Answer: A", "Answer: B\nbecause", " x", ""]), "") for u in unlabeled]
    pairs += [(task_prompt(task, u), f"Answer: {a}") for u, a in zip(unlabeled, "ABCA")]
    return pairs


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, tiny_model, demo_source):
    from conftest import make_sandbox

    return make_sandbox(tmp_path_factory.mktemp("chat_format"), tiny_model, demo_source)


@pytest.fixture(scope="module")
def formats(sandbox, tiny_model) -> dict:
    """Template name -> (its LlamaFactory ChatFormat, the folder it was exported to)."""
    from semievol_lf.llamafactory.chat_format import ChatFormat

    chats = {name: ChatFormat(str(tiny_model), name) for name in TEMPLATES}
    return {name: (chat, chat.export(sandbox / "formats" / name)) for name, chat in chats.items()}


def test_exported_formats_render_like_llamafactory_without_it(sandbox, formats):
    pairs = demo_pairs(sandbox / "data/demo")
    expected = {str(folder): (chat, [list(map(list, chat.encode(p, r))) for p, r in pairs])
                for chat, folder in formats.values()}
    (sandbox / "pairs.json").write_text(json.dumps(pairs))
    proc = run_cmd([PY, "-c", RENDER, sandbox / "pairs.json", *expected], cwd=sandbox)
    got = json.loads(proc.stdout)
    for folder, (chat, encoded) in expected.items():
        assert got[folder]["encoded"] == encoded, folder
        assert got[folder]["stop_ids"] == list(chat.stop_ids)
        assert got[folder]["decoded"] == chat.decode(chat.prompt_ids(pairs[0][0]))
    # The templates really differ, so agreement is not an accident of one shared format.
    assert len({json.dumps(e[1][0]) for e in expected.values()}) == len(TEMPLATES)


@pytest.mark.slow
def test_every_llamafactory_template_exports(sandbox, tiny_model, tmp_path):
    """Each of LlamaFactory's templates exports (its probes pass) and renders the demo prompts as LlamaFactory
    does; a template that ever stops doing so is named."""
    from llamafactory.data.template import TEMPLATES

    from semievol_lf.llamafactory.chat_format import ChatFormat, ExportedChatFormat

    pairs = demo_pairs(sandbox / "data/demo")[::4]
    wrong = []
    for name in sorted(TEMPLATES):
        chat = ChatFormat(str(tiny_model), name)
        exported = ExportedChatFormat(chat.export(tmp_path / name))
        if any(exported.encode(p, r) != chat.encode(p, r) for p, r in pairs):
            wrong.append(name)
    assert wrong == []
    assert len(TEMPLATES) > 100


def test_pseudolabel_without_llamafactory_gives_the_same_results(sandbox, trained_sandbox):
    """The whole step, rendered from the export with LlamaFactory blocked, equals the usual run."""
    box = trained_sandbox
    common = ["recipes/pseudolabel_demo.yaml", "justify=vote", "max_new_tokens=6"]
    run_cmd([PY, "-m", "semievol_lf.pseudolabel", *common, "output_dir=saves/cf/with_lf"], cwd=box)
    run_cmd([PY, "-m", "semievol_lf.cli", "export-chat-format", "recipes/pseudolabel_demo.yaml",
             "--out", "saves/cf/format"], cwd=box)
    proc = run_cmd([PY, "-c", NO_LF, "semievol_lf.pseudolabel", *common, "output_dir=saves/cf/without_lf",
                    "chat_format=saves/cf/format"], cwd=box)
    assert "kept" in proc.stdout
    for name in ("candidates.jsonl", "selected.json", "dataset_info.json"):
        assert (box / "saves/cf/without_lf" / name).read_bytes() == (box / "saves/cf/with_lf" / name).read_bytes()


@pytest.mark.parametrize("extra, message", [
    ([], "LlamaFactory is not installed"),
    (["chat_format=saves/nowhere"], "holds no format.json"),
    (["chat_format=formats/llama3"], "exported for template 'llama3'"),
])
def test_clear_errors_before_any_model_loads(sandbox, formats, extra, message):
    proc = run_cmd([PY, "-c", NO_LF, "semievol_lf.pseudolabel", "recipes/pseudolabel_demo.yaml",
                    "adapter_name_or_path=.cache/tiny-llama", *extra], cwd=sandbox, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (sandbox / "saves/tiny/demo/pseudolabel/index").exists()  # failed before retrieval


def test_export_refuses_an_unknown_template_and_keeps_the_old_export(sandbox, formats):
    proc = run_cmd([PY, "-m", "semievol_lf.cli", "export-chat-format", "recipes/pseudolabel_demo.yaml",
                    "template=no_such_template", "--out", "formats/default"], cwd=sandbox, check=False)
    assert proc.returncode == 2 and "unknown LlamaFactory template" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((sandbox / "formats/default/format.json").read_text())["template"] == "default"


def test_evaluate_scores_the_end_of_turn_as_eq6_does(formats):
    """Fig. 4's entropy (evaluate, on the generated ids) counts the tokens Eq. 6 counts (pseudolabel, on
    `encode(prompt, "Answer: X")`): the answer and the template's end of turn, whether the backend returns
    the stop token (vllm, openai) or not (hf)."""
    from semievol_lf.llamafactory.chat_format import ExportedChatFormat
    from semievol_lf.semievol.evaluate import _strip_stop, scored_ids

    for name, (chat, folder) in formats.items():
        eq6 = chat.encode("Sentiment of: x", "Answer: A")[1]
        assert chat.end_of_turn and eq6[-len(chat.end_of_turn):] == chat.end_of_turn, name
        assert ExportedChatFormat(folder).end_of_turn == chat.end_of_turn, name
        answer = chat.tokenizer.encode("Answer: A", add_special_tokens=False)
        for generated in (answer, [*answer, chat.stop_ids[0]]):  # hf, vllm
            scored = scored_ids(_strip_stop(generated, chat.stop_ids), chat)
            if name not in ("qwen3", "mistral"):  # these put ids before the content: an empty thought, a space
                assert scored == eq6, name
            assert scored[-len(chat.end_of_turn):] == chat.end_of_turn, name


def test_an_export_whose_probe_ids_this_environment_does_not_reproduce_is_refused(formats, tmp_path):
    """The export stores LlamaFactory's ids of the probes; the vLLM environment (another transformers)
    renders them again on load. A stored id edited stands for a tokenizer that tokenises differently."""
    import shutil

    from semievol_lf.errors import UserError
    from semievol_lf.llamafactory.chat_format import PROBES, ExportedChatFormat

    _, folder = formats["llama3"]
    spec = json.loads((folder / "format.json").read_text())
    assert [(p["prompt"], p["response"]) for p in spec["probes"]] == PROBES and spec["transformers_version"]
    copy = tmp_path / "llama3"
    shutil.copytree(folder, copy)
    spec["probes"][1]["ids"][1][0] += 1  # the first response id of ("What is 2 + 2?", "Answer: B")
    (copy / "format.json").write_text(json.dumps(spec))
    with pytest.raises(UserError) as err:
        ExportedChatFormat(copy)
    message = str(err.value)
    assert message.startswith(f"`chat_format`: {copy}: this environment renders the probe ('What is 2 + 2?', "
                              "'Answer: B') differently") and "response ids differ from position 0" in message
    assert f"exported with transformers {spec['transformers_version']}" in message
    ExportedChatFormat(folder)  # the export as written loads
