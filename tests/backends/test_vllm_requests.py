"""The vLLM backend's request building, checked without vLLM (these run in the main venv).

The engine itself is checked in tests/vllm_lane/test_vllm_backend.py (`make test-vllm`).
"""

from types import SimpleNamespace

import pytest

from semievol_lf.backends.base import GenerationRequest, ScoreRequest, response_logprobs, score_prompt_ids
from semievol_lf.backends.vllm import (
    VLLM_LORA_RANKS,
    adapter_rank,
    build_engine_kwargs,
    build_lora_requests,
    build_sampling_kwargs,
    lora_target_modules,
    max_lora_rank_for,
    score_in_one_call,
)
from semievol_lf.errors import UserError

WARM = object()  # stands in for the LoRARequest: only its identity matters here


# -- LoRA per request -----------------------------------------------------------------------------

def test_lora_requests_mix_base_and_warm_in_request_order():
    loras = build_lora_requests([True, False, False, True], WARM)
    assert loras == [WARM, None, None, WARM]
    assert loras[0] is WARM and loras[3] is WARM


def test_lora_requests_without_adapter_are_all_base():
    assert build_lora_requests([False, False], None) == [None, None]


def test_asking_for_a_missing_adapter_is_an_error():
    with pytest.raises(UserError, match="without one"):
        build_lora_requests([False, True], None)


# -- sampling -------------------------------------------------------------------------------------

def test_each_request_keeps_its_own_seed_and_settings():
    reqs = [GenerationRequest(prompt_ids=(0, 5), adapter=False, seed=11, temperature=0.7, top_p=0.9, max_new_tokens=5),
            GenerationRequest(prompt_ids=(0, 6), adapter=True, seed=12)]
    kw = [build_sampling_kwargs(r) for r in reqs]
    off = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    assert kw[0] == {"n": 1, "seed": 11, "temperature": 0.7, "top_p": 0.9, "max_tokens": 5, **off}
    assert kw[1] == {"n": 1, "seed": 12, "temperature": 1.0, "top_p": 1.0, "max_tokens": 64, **off}  # defaults


def test_temperature_zero_is_passed_through_as_greedy():
    kw = build_sampling_kwargs(GenerationRequest(prompt_ids=(0,), adapter=False, seed=3, temperature=0.0))
    assert kw["temperature"] == 0.0 and kw["seed"] == 3


# -- choice constraint: new name first, old name as fallback ---------------------------------------

# -- scoring --------------------------------------------------------------------------------------

def test_score_prompt_is_prompt_then_response():
    assert score_prompt_ids(ScoreRequest(prompt_ids=(0, 5, 9), response_ids=(7, 1))) == [0, 5, 9, 7, 1]


def test_score_needs_a_prompt():
    with pytest.raises(UserError, match="empty prompt"):
        score_prompt_ids(ScoreRequest(prompt_ids=(), response_ids=(7,)))


def test_response_logprobs_read_the_response_positions_only():
    # prompt (0, 5, 9) + response (7, 1): entry i scores token i given tokens < i; entry 0 is None.
    req = ScoreRequest(prompt_ids=(0, 5, 9), response_ids=(7, 1))
    entries = [None, {5: -1.0}, {9: -2.0}, {7: -0.25, 3: -9.0}, {1: -0.5, 7: -4.0}]
    assert response_logprobs(entries, req) == [-0.25, -0.5]


def test_response_logprobs_take_the_logprob_attribute_and_the_actual_token():
    # vLLM gives Logprob objects; with prompt_logprobs=0 an entry may also hold the top-1 token.
    lp = lambda x: SimpleNamespace(logprob=x, rank=1)
    req = ScoreRequest(prompt_ids=(4,), response_ids=(8, 8))
    entries = [None, {8: lp(-0.75), 2: lp(-0.1)}, {2: lp(-0.2), 8: lp(-3.0)}]
    assert response_logprobs(entries, req) == [-0.75, -3.0]


def test_response_logprobs_of_an_empty_response_and_a_length_mismatch():
    assert response_logprobs([None, {5: -1.0}], ScoreRequest(prompt_ids=(0, 5), response_ids=())) == []
    with pytest.raises(ValueError, match="expected 3"):
        response_logprobs([None, {5: -1.0}], ScoreRequest(prompt_ids=(0, 5), response_ids=(2,)))


# -- engine arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("rank, expected", [(1, 1), (2, 8), (8, 8), (9, 16), (16, 16), (17, 32), (64, 64),
                                            (257, 320), (321, 512), (512, 512)])
def test_max_lora_rank_rounds_up_to_an_allowed_rank(rank, expected):
    assert max_lora_rank_for(rank) == expected


def test_max_lora_rank_beyond_the_largest_is_refused():
    with pytest.raises(UserError, match="exceeds"):
        max_lora_rank_for(VLLM_LORA_RANKS[-1] + 1)
    assert max_lora_rank_for(5, allowed=(4, 16)) == 16  # a live list from vLLM replaces the default


def test_adapter_rank_includes_rank_pattern():
    assert adapter_rank({"r": 8}) == 8
    assert adapter_rank({"r": 8, "rank_pattern": {"q_proj": 24, "v_proj": 4}}) == 24
    assert adapter_rank({"r": 16, "rank_pattern": {}}) == 16


def test_lora_target_modules_are_the_adapters_module_suffixes():
    config = {"target_modules": ["model.layers.1.self_attn.o_proj", "model.layers.0.self_attn.o_proj",
                                 "model.layers.0.mlp.up_proj", "q_proj"]}
    assert lora_target_modules(config) == ["o_proj", "q_proj", "up_proj"]
    assert lora_target_modules({"target_modules": ".*proj"}) is None  # a regex: vLLM's own default applies


def test_engine_kwargs_without_adapter_leave_lora_off():
    kw = build_engine_kwargs("m", None, seed=3, max_model_len=512)
    assert "enable_lora" not in kw and "max_lora_rank" not in kw and "max_loras" not in kw
    assert kw["model"] == kw["tokenizer"] == "m" and kw["seed"] == 3 and kw["max_model_len"] == 512
    assert "max_model_len" not in build_engine_kwargs("m", None)  # None: the model's own length


def test_engine_kwargs_with_adapter_on_gpu():
    kw = build_engine_kwargs("m", 12, lora_targets=["q_proj"])
    assert kw["enable_lora"] is True and kw["max_lora_rank"] == 16 and kw["max_loras"] == 1
    assert kw["lora_target_modules"] == ["q_proj"]  # as on the CPU: lm_head stays unwrapped for prompt_logprobs
    assert "enable_chunked_prefill" not in kw
    assert "lora_target_modules" not in build_engine_kwargs("m", 12)  # a regex adapter: vLLM's own default


def test_engine_kwargs_on_cpu_work_around_vllm_cpu_bugs():
    kw = build_engine_kwargs("m", 8, lora_targets=["down_proj", "q_proj"], on_cpu=True)
    assert kw["max_loras"] == 2  # a spare, empty slot for the base model's wrapped -1 index
    assert kw["lora_target_modules"] == ["down_proj", "q_proj"]  # keeps lm_head unwrapped
    assert kw["enable_chunked_prefill"] is False
    assert build_engine_kwargs("m", None, on_cpu=True)["enable_chunked_prefill"] is False


def test_engine_kwargs_let_the_caller_override():
    kw = build_engine_kwargs("m", 8, on_cpu=True, max_loras=4, enable_chunked_prefill=True, enforce_eager=True)
    assert kw["max_loras"] == 4 and kw["enable_chunked_prefill"] is True and kw["enforce_eager"] is True


def test_scoring_batches_unless_the_engine_may_wrap_lm_head():
    for on_cpu in (False, True):
        assert score_in_one_call({}, on_cpu=on_cpu)
        assert score_in_one_call({"enable_lora": True, "lora_target_modules": ["q_proj"]}, on_cpu=on_cpu)
        assert not score_in_one_call({"enable_lora": True}, on_cpu=on_cpu)  # targets unknown: lm_head may be wrapped
        assert not score_in_one_call({"enable_lora": True, "lora_target_modules": ["lm_head", "q_proj"]},
                                     on_cpu=on_cpu)
    assert not score_in_one_call({"enable_lora": True, "lora_target_modules": ["q_proj", "lm_head"]}, on_cpu=True)


def test_template_stop_ids_reach_the_sampling_params():
    from semievol_lf.backends.base import GenerationRequest
    from semievol_lf.backends.vllm import build_sampling_kwargs

    req = GenerationRequest((1, 2), adapter=False, seed=3)
    assert build_sampling_kwargs(req, stop_ids=(128009,))["stop_token_ids"] == [128009]
    assert "stop_token_ids" not in build_sampling_kwargs(req)
