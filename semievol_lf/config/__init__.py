"""Typed, documented, validated-once settings of this package's own steps (the fine-tunes are
configured by LlamaFactory's recipes), modelled on LlamaFactory's `hparams/`.

    parser.py          RECIPE.yaml + key=value / --key value / dotted keys -> a dataclass; --help
    base.py            Arguments: the root of the parts (each part checks its fields, then super())
    model_args.py      ModelArguments: base model, warm adapter, template, chat_format
    data_args.py       TaskArguments (task), DataArguments (+ data_dir)
    method_args.py     RetrievalArguments (embedder), MethodArguments (n, models, shots, ..., theta, k)
    inference_args.py  InferenceArguments (backend, backend_args, batch, length, seed), OutputArguments
    backend_args.py    per-backend dataclasses that `backend_args` is checked against
    step_args.py       PseudolabelArguments, EvaluateArguments: composed from the parts
    run_args.py        RunArguments: the run's parts, and the step configurations built from them
"""

from .backend_args import (
    BACKEND_ARGUMENTS,
    HFBackendArguments,
    OpenAIBackendArguments,
    VLLMBackendArguments,
    backend_kwargs,
    check_backend_args,
)
from .base import Arguments
from .data_args import DataArguments, TaskArguments
from .inference_args import InferenceArguments, OutputArguments
from .method_args import MINILM, PACKAGED_MINILM, MethodArguments, RetrievalArguments
from .model_args import ModelArguments
from .parser import (
    apply_overrides,
    as_config,
    build_config,
    build_nested,
    check_value,
    format_help,
    load_config,
    load_yaml_with_lines,
    parse_overrides,
    read_args,
    split_overrides,
)
from .run_args import RunArguments
from .step_args import EvaluateArguments, PseudolabelArguments

__all__ = [
    "BACKEND_ARGUMENTS", "MINILM", "PACKAGED_MINILM", "Arguments", "DataArguments", "EvaluateArguments",
    "HFBackendArguments", "InferenceArguments", "MethodArguments", "ModelArguments", "OpenAIBackendArguments",
    "OutputArguments", "PseudolabelArguments", "RetrievalArguments", "RunArguments", "TaskArguments",
    "VLLMBackendArguments", "apply_overrides", "as_config", "backend_kwargs", "build_config", "build_nested",
    "check_backend_args", "check_value", "format_help", "load_config", "load_yaml_with_lines", "parse_overrides",
    "read_args", "split_overrides",
]
