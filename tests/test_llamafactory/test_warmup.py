"""The demo warm-up recipe trains for real with `llamafactory-cli train`."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_warmup_recipe_trains_an_adapter_and_loss_goes_down(trained_sandbox):
    out = trained_sandbox / "saves/tiny/demo/warmup"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["peft_type"] == "LORA"
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    losses = [json.loads(line)["loss"] for line in open(out / "trainer_log.jsonl") if "loss" in json.loads(line)]
    assert len(losses) >= 5
    assert losses[-1] < 0.25 * losses[0]  # the tiny model learned the answer format
