"""The `semievol-lf` command: one entry point for every step.

    semievol-lf run recipes/run_demo.yaml [key=value ...]
    semievol-lf meteor run recipes/meteor_demo.yaml [key=value ...]
    semievol-lf prepare --task mmlu --source DIR --out data/mmlu
    semievol-lf pseudolabel recipes/pseudolabel_mmlu.yaml
    semievol-lf evaluate recipes/evaluate_mmlu.yaml
    semievol-lf recipes [validate FILE ...]
    semievol-lf export-chat-format recipes/pseudolabel_mmlu.yaml --out saves/mmlu/chat_format
    semievol-lf data-info merge --into PATH/TO/dataset_info.json [--force]
    semievol-lf demo build-model --out .cache/tiny-llama [--seed 0] [--tokenizer bpe|word]
    semievol-lf demo data --out DIR [--seed 0]
    semievol-lf model build smollm2-135m [--out DIR]
"""

import argparse
import sys
from pathlib import Path

from .errors import UserError, exit_on_user_error
from .progress import setup_logging

USAGE = __doc__.split("\n\n", 1)[1]


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
    parser = argparse.ArgumentParser(prog="semievol-lf demo")
    sub = parser.add_subparsers(dest="what", required=True)
    model = sub.add_parser("build-model", help="build the seeded tiny Llama model and tokenizer offline")
    model.add_argument("--out", default=".cache/tiny-llama")
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--tokenizer", choices=["bpe", "word"], default="bpe")
    data = sub.add_parser("data", help="write the generated demo task (labeled/unlabeled/test.csv)")
    data.add_argument("--out", required=True)
    data.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "build-model":
        from .models.tiny import build_model

        print(f"tiny model in {build_model(args.out, seed=args.seed, tokenizer=args.tokenizer)}")
    else:
        from .data.demo import DemoSpec, write_demo_data

        print(f"demo data in {write_demo_data(args.out, DemoSpec(seed=args.seed))}")


def _model(argv: list[str]) -> None:
    from .models.build import build_preset_model
    from .models.presets import PRESETS

    parser = argparse.ArgumentParser(prog="semievol-lf model",
                                     description="Build a preset's local model folder (offline, once).")
    parser.add_argument("action", choices=["build"])
    parser.add_argument("preset", choices=[name for name, p in PRESETS.items() if p.build])
    parser.add_argument("--out", default=None, help="folder (default: the preset's, e.g. .cache/smollm2-135m)")
    args = parser.parse_args(argv)
    print(f"{args.preset} model in {build_preset_model(args.preset, args.out)}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage:\n" + USAGE)
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    setup_logging()
    with exit_on_user_error():
        if command == "run":
            from .semievol import pipeline

            pipeline.main(argv=rest)
        elif command == "meteor":
            from .meteor.pipeline import cli

            cli(rest)
        elif command == "prepare":
            from .data import prepare

            prepare.main(rest)
        elif command == "pseudolabel":
            from .config import PseudolabelArguments, load_config
            from .semievol.pseudolabel import run as pseudolabel

            pseudolabel.main(load_config(PseudolabelArguments, rest, prog="semievol-lf pseudolabel"))
        elif command == "evaluate":
            from .config import EvaluateArguments, load_config
            from .semievol import evaluate

            evaluate.main(load_config(EvaluateArguments, rest, prog="semievol-lf evaluate"))
        elif command == "recipes":
            from .llamafactory import recipes

            recipes.main(rest)
        elif command == "export-chat-format":
            from .llamafactory.chat_format import export_main

            export_main(rest)
        elif command == "data-info":
            _data_info(rest)
        elif command == "demo":
            _demo(rest)
        elif command == "model":
            _model(rest)
        else:
            print(f"error: unknown command {command!r}\nusage:\n{USAGE}", file=sys.stderr)
            raise SystemExit(2)


if __name__ == "__main__":
    main()
