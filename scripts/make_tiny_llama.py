#!/usr/bin/env python3
"""Make a tiny random-weight Llama that SGLang loads in seconds (offline, deterministic, no torch).

Usage: make_tiny_llama.py [--shape tiny|3b] [DIR]   (default: tiny, ~/.cache/dynlaunch/tiny-llama)

``tiny`` (3.3 M parameters, 6.6 MB) loads in seconds; its prefill costs nothing, so prefix-cache
hits do not show in time to first token. ``3b`` (2.8 B parameters, 5.6 GB, 32k positions, under a
minute to write) has a prefill of a 16k-token prompt that takes a good part of TTFT on an H100.

The tokenizer, its chat template and generation_config.json come from ``launcher.tinymodel``;
this script rewrites config.json with the Llama shape below and writes model.safetensors
(float16, normal(0, 0.02), norms 1) with the tensor names of HF ``LlamaForCausalLM``.
Needs numpy, safetensors and tokenizers: all three come with transformers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher import tinymodel

SEED = 20261127
DTYPE = "float16"
SHAPES: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 4096,
    },
    "3b": {
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 32768,  # room for 16k-token prefixes
    },
}
DEFAULT_DIR = Path.home() / ".cache" / "dynlaunch" / "tiny-llama"


def llama_config(shape: dict[str, int], vocab: int, bos: int, eos: int) -> dict[str, object]:
    """The config.json of the Llama; ``vocab`` is the tokenizer's size."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **shape,
        "vocab_size": vocab,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": DTYPE,
    }


def tensor_shapes(shape: dict[str, int], vocab: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of HF LlamaForCausalLM with its shape (out_features, in_features)."""
    hidden, inter, head_dim = shape["hidden_size"], shape["intermediate_size"], shape["head_dim"]
    q_out = shape["num_attention_heads"] * head_dim
    kv_out = shape["num_key_value_heads"] * head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for n in range(shape["num_hidden_layers"]):
        p = f"model.layers.{n}"
        shapes |= {
            f"{p}.self_attn.q_proj.weight": (q_out, hidden),
            f"{p}.self_attn.k_proj.weight": (kv_out, hidden),
            f"{p}.self_attn.v_proj.weight": (kv_out, hidden),
            f"{p}.self_attn.o_proj.weight": (hidden, q_out),
            f"{p}.mlp.gate_proj.weight": (inter, hidden),
            f"{p}.mlp.up_proj.weight": (inter, hidden),
            f"{p}.mlp.down_proj.weight": (hidden, inter),
            f"{p}.input_layernorm.weight": (hidden,),
            f"{p}.post_attention_layernorm.weight": (hidden,),
        }
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


POOL = 1 << 24  # random values drawn at most: larger shapes repeat them (fine for timing)


def random_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Seeded normal(0, 0.02) matrices and all-ones norm weights, in float16. Drawing 2.8 B
    normals takes minutes, so a matrix larger than POOL repeats a pool from a seeded offset."""
    rng = np.random.default_rng(SEED)
    pool: np.ndarray | None = None
    out: dict[str, np.ndarray] = {}
    for name in sorted(shapes):
        shape = shapes[name]
        size = int(np.prod(shape))
        if len(shape) == 1:
            out[name] = np.ones(shape, dtype=np.float16)
        elif size <= POOL:
            out[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
        else:
            if pool is None:
                pool = (rng.standard_normal(POOL, dtype=np.float32) * 0.02).astype(np.float16)
            start = int(rng.integers(POOL))
            out[name] = np.resize(np.roll(pool, -start), size).reshape(shape)
    return out


def make(path: Path, shape: str = "tiny") -> Path:
    """Write the Llama of ``shape`` into ``path`` (created if needed) and return it."""
    tinymodel.make(path)
    base = json.loads((path / "config.json").read_text())
    vocab = int(base["vocab_size"])
    cfg = llama_config(SHAPES[shape], vocab, int(base["bos_token_id"]), int(base["eos_token_id"]))
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    tok = json.loads((path / "tokenizer_config.json").read_text())
    tok["model_max_length"] = SHAPES[shape]["max_position_embeddings"]
    (path / "tokenizer_config.json").write_text(json.dumps(tok, indent=2) + "\n")
    weights = random_weights(tensor_shapes(SHAPES[shape], vocab))
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "model.safetensors").chmod(0o644)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    make(args.dir, args.shape)
    print(f"{args.shape} llama written to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
