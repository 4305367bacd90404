"""The `semievol-lf` command: one entry point for every step, listed in the order of the method.

    semievol-lf prepare --task mmlu --source DIR --out data/mmlu
    semievol-lf recipes [validate FILE ...]
    semievol-lf run recipes/run_demo.yaml [key=value ...]
    semievol-lf pseudolabel recipes/pseudolabel_mmlu.yaml
    semievol-lf evaluate recipes/evaluate_mmlu.yaml
    semievol-lf meteor run recipes/meteor_demo.yaml [key=value ...]
    semievol-lf model build tiny [--out DIR]

COMMANDS (name -> handler and usage) is the one list: the usage text, `--help` and the dispatch all
read it. Each handler imports what it needs, so `--help` and a mistyped command answer at once.
"""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import UserError, exit_on_user_error
from .progress import setup_logging


def _data_info(argv: list[str]) -> None:
    from .llamafactory.dataset_info import DATA_INFO, absolutise, merge_into, read_data_info
    from .paths import data_info_dir

    parser = argparse.ArgumentParser(prog="semievol-lf data-info merge",
                                     description="Merge this project's dataset_info entries into another file.")
    parser.add_argument("action", choices=["merge"])
    parser.add_argument("--into", required=True, help="target dataset_info.json (or its folder)")
    parser.add_argument("--from", dest="source", default=str(data_info_dir() / DATA_INFO),
                        help="entries to merge (default: data_info/dataset_info.json of this project)")
    parser.add_argument("--force", action="store_true", help="replace entries of the same name (a backup is kept)")
    args = parser.parse_args(argv)
    source = Path(args.source)
    if not source.is_file():  # a missing target is a new file; a missing source is a typo
        raise UserError(f"--from {source}: no such file (a dataset_info.json whose entries to merge)")
    entries = absolutise(read_data_info(source), source.parent)
    changed = merge_into(args.into, entries, force=args.force)
    print(f"merged {len(changed)} entr{'y' if len(changed) == 1 else 'ies'} into {args.into}"
          + (" (backup: .bak beside it)" if changed else " (nothing to change)"))


def _demo(argv: list[str]) -> None:
    if argv[:1] == ["build-model"]:  # the old verb; one builder now builds every preset's model
        raise UserError("`semievol-lf demo build-model` was replaced by `semievol-lf model build tiny` "
                        "(or `tiny-word`) [--out DIR]")
    parser = argparse.ArgumentParser(prog="semievol-lf demo")
    sub = parser.add_subparsers(dest="what", required=True)
    data = sub.add_parser("data", help="write the generated demo task (labeled/unlabeled/test.csv)")
    data.add_argument("--out", required=True)
    data.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from .data.demo import DemoSpec, write_demo_data

    print(f"demo data in {write_demo_data(args.out, DemoSpec(seed=args.seed))}")


def _model(argv: list[str]) -> None:
    from .models.build import build_preset_model
    from .models.presets import PRESETS

    parser = argparse.ArgumentParser(prog="semievol-lf model",
                                     description="Build a preset's local model folder (offline, once): the seeded "
                                                 "tiny models of the demo and the tests, or SmolLM2-135M-Instruct.")
    parser.add_argument("action", choices=["build"])
    parser.add_argument("preset", choices=[name for name, p in PRESETS.items() if p.build])
    parser.add_argument("--out", default=None, help="folder (default: the preset's, e.g. .cache/tiny-llama)")
    args = parser.parse_args(argv)
    print(f"{args.preset} model in {build_preset_model(args.preset, args.out)}")


def _prepare(argv: list[str]) -> None:
    from .data import prepare

    prepare.main(argv)


def _recipes(argv: list[str]) -> None:
    from .llamafactory import recipes

    recipes.main(argv)


def _run(argv: list[str]) -> None:
    from .semievol import pipeline

    pipeline.main(argv=argv)


def _pseudolabel(argv: list[str]) -> None:
    from .config import PseudolabelArguments, load_config
    from .semievol.pseudolabel import run as pseudolabel

    pseudolabel.main(load_config(PseudolabelArguments, argv, prog="semievol-lf pseudolabel"))


def _evaluate(argv: list[str]) -> None:
    from .config import EvaluateArguments, load_config
    from .semievol import evaluate

    evaluate.main(load_config(EvaluateArguments, argv, prog="semievol-lf evaluate"))


def _meteor(argv: list[str]) -> None:
    from .meteor.pipeline import cli

    cli(argv)


def _export_chat_format(argv: list[str]) -> None:
    from .llamafactory.chat_format import export_main

    export_main(argv)


# name -> (handler, its usage lines), in the order of the method: data, recipes, the whole run, its
# steps, METEOR, then the tools. The usage text and the dispatch both read this table.
COMMANDS: dict[str, tuple[Callable[[list[str]], None], list[str]]] = {
    "prepare": (_prepare, ["--task mmlu --source DIR --out data/mmlu"]),
    "recipes": (_recipes, ["[validate FILE ...]"]),
    "run": (_run, ["recipes/run_demo.yaml [key=value ...]"]),
    "pseudolabel": (_pseudolabel, ["recipes/pseudolabel_mmlu.yaml [key=value ...]"]),
    "evaluate": (_evaluate, ["recipes/evaluate_mmlu.yaml [key=value ...]"]),
    "meteor": (_meteor, ["run recipes/meteor_demo.yaml [key=value ...]"]),
    "model": (_model, ["build PRESET [--out DIR]"]),
    "export-chat-format": (_export_chat_format, ["recipes/pseudolabel_mmlu.yaml --out saves/mmlu/chat_format"]),
    "data-info": (_data_info, ["merge --into PATH/TO/dataset_info.json [--force]"]),
    "demo": (_demo, ["data --out DIR [--seed 0]"]),
}
USAGE = "\n".join(f"    semievol-lf {name} {line}" for name, (_, lines) in COMMANDS.items() for line in lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage:\n" + USAGE)
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\nusage:\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    setup_logging()
    with exit_on_user_error():
        COMMANDS[command][0](rest)


if __name__ == "__main__":
    main()
