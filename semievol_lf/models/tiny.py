"""Build a seeded tiny Llama-architecture model and tokenizer offline (for tests and the demo).

    semievol-lf model build tiny --out .cache/tiny-llama     # tiny-word: the word-level tokenizer

Tokenizer: byte-level BPE trained locally on the demo task's words and this package's
prompt templates, or (`tokenizer="word"`) one token per whitespace-separated word, which
the quality benchmark needs so that every invented word is a single token.
The same seed gives the same files, byte for byte.
"""

from pathlib import Path

from ..data.demo import DemoSpec, corpus
from ..io_utils import StepMarker
from ..paths import templates_dir

# The prompts in the tokenizer's corpus, a fixed list: a template added later does not change the tiny model.
CORPUS_PROMPTS = [f"{folder}/{name}.jinja" for folder, name in [
    ("tasks", "_instruction"), ("tasks", "_options"), ("tasks", "arc"), ("tasks", "convfinqa"), ("tasks", "demo"),
    ("tasks", "fpb"), ("semievol", "icp"), ("semievol", "justify"), ("semievol", "justify_number"), ("tasks", "mmlu"),
    ("tasks", "mmlu_pro"), ("tasks", "pubmedqa"), ("tasks", "usmle")]]  # sorted by file name, as first built
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
# The `default` LlamaFactory template's format, so `apply_chat_template` agrees with training.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}System: {{ m['content'] }}{{ eos_token }}\n"
    "{% elif m['role'] == 'user' %}Human: {{ m['content'] }}{{ eos_token }}\nAssistant:"
    "{% else %}{{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
)


def _training_text(spec: DemoSpec) -> list[str]:
    text = corpus(spec)
    text += [(templates_dir() / name).read_text() for name in CORPUS_PROMPTS]
    text += ["Human: Assistant: System: Answer: A B C D E F G H I J 0 1 2 3 4 5 6 7 8 9 . , % -"]
    return text


def build_tokenizer(spec: DemoSpec, kind: str = "bpe", vocab_size: int = 1024):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL.values())
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token=SPECIAL["unk_token"]))
        # Words and punctuation become tokens; "\n" is kept as a token so templates keep their lines.
        # Spaces are dropped, "\n" kept. Regex(...): a plain str pattern is matched literally,
        # which left every word <unk>.
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"\n|\w+|[^\w\s]"), behavior="isolated")])
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
        trainer = trainers.WordLevelTrainer(special_tokens=specials, show_progress=False)
    else:
        raise ValueError(f"tokenizer must be 'bpe' or 'word', got {kind!r}")
    tok.train_from_iterator(_training_text(spec), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def build_model(out: str | Path, seed: int = 0, tokenizer: str = "bpe", hidden_size: int = 64,
                intermediate_size: int = 128, num_layers: int = 2, spec: DemoSpec | None = None,
                embed_std: float = 0.3) -> Path:
    """Write a tiny LlamaForCausalLM and its tokenizer to `out`; skip when the same build is there."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    spec = spec or DemoSpec(seed=seed)
    recipe = {"seed": seed, "tokenizer": tokenizer, "hidden_size": hidden_size,
              "intermediate_size": intermediate_size, "num_layers": num_layers, "spec": spec.__dict__,
              "embed_std": embed_std}
    if tokenizer == "word":
        recipe["word_split"] = "regex"  # builds made before the Regex fix are rebuilt
    marker = StepMarker(out / "semievol_build.json", recipe)  # written last: the build finished
    if marker.done():
        return out
    tok = build_tokenizer(spec, tokenizer)
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),  # small corpora give fewer merges
        max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    # With the default init (std 0.02) the tied output embeddings give logits near zero after
    # the final RMSNorm, so no LoRA update can make the model confident; rows of std 0.3 can.
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, embed_std)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    marker.write()
    return out
