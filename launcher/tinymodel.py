"""A tiny offline model directory for the mocker: tokenizer, chat template, config; no weights.

The mocker never loads weights, but the frontend needs a real tokenizer (vocabulary over 2000:
the mocker emits token ids from 1000 to 2000) and a chat template. Made offline and deterministic.
"""

from __future__ import annotations

import builtins
import json
import random
from pathlib import Path

from launcher.errors import StartupError

VOCAB_SIZE = 4096
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def _corpus() -> list[str]:
    """Built-in docstrings plus seeded pseudo-words: enough text for a 4096-entry vocabulary."""
    docs = [getattr(builtins, name).__doc__ or "" for name in sorted(dir(builtins))]
    rng = random.Random(20261127)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ti", "so", "va", "pe", "zu", "gor", "lin", "dex"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(20000)]
    return [d for d in docs if d] + [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]


def is_complete(path: Path) -> bool:
    return all((path / name).is_file() for name in FILES)


def make(path: Path) -> Path:
    """Write the model into ``path`` (created if needed) and return it."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise StartupError(
            "making the tiny model for `up mocker` needs the `tokenizers` package: "
            "run scripts/setup.sh (ai-dynamo brings it), or pip install tokenizers"
        ) from None
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.save(str(path / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    if vocab <= 2000:
        raise StartupError(f"tiny model tokenizer has only {vocab} tokens; the mocker needs > 2000")
    ids = {name: tok.token_to_id(name) for name in SPECIALS}
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 4096,
        "vocab_size": vocab,
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["<|end|>"],
        "torch_dtype": "bfloat16",
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "<|end|>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "model_max_length": 4096,
        "chat_template": CHAT_TEMPLATE,
    }
    generation = {"bos_token_id": ids["<s>"], "eos_token_id": ids["<|end|>"]}
    for name, data in (
        ("config.json", config),
        ("tokenizer_config.json", tokenizer_config),
        ("generation_config.json", generation),
    ):
        (path / name).write_text(json.dumps(data, indent=2) + "\n")
    return path
