"""Random-weight models of a real shape, built on the spot for the GPU self-check (`inference/smoke.py`).

`build_synthetic("llama-7b", "fp16", out_dir, tokenizer_dir)` writes a Hugging Face folder (config.json,
generation_config.json, the tokenizer copied from `tokenizer_dir`, safetensors shards and their index)
that both engines load the normal way. Nothing is downloaded and the whole model is never held in
memory: parameter names and shapes come from a `LlamaForCausalLM` built on the meta device, and each
tensor is drawn directly in its storage dtype on the CPU and written shard by shard (peak RAM about
one shard, 2 GiB). The CPU is used on purpose so that this process creates no CUDA context of its own.

Formats:
- `fp16`: every tensor float16 (std 0.02, norms 1), what `INFERENCE_DTYPE=float16` serves.
- `bnb-int8`: the same float16 folder; the engine quantises it at load with
  `BitsAndBytesConfig(load_in_8bit=True)` (the smoke runner sets `INFERENCE_QUANTIZATION=bnb-int8`).
- `w8a8`: the compressed-tensors `int-quantized` layout llm-compressor writes for scheme W8A8
  (scripts/quantize.py): every Linear but `lm_head` as an int8 `weight` plus a per-output-channel
  float16 `weight_scale` of shape [out, 1], activations quantised per token at run time. Only vLLM
  serves it; the transformers engine cannot.

Vocabulary: 32000 like Llama-2 (so the parameter count is Llama-7B's 6.74 B). The embedded model's
tokenizer has more ids than that; callers keep prompt ids below `vocab_size` (the smoke runner does).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

FORMATS = ("fp16", "bnb-int8", "w8a8")
SHARD_BYTES = 2 * 1024**3
INIT_STD = 0.02
INT8_STD = 73.3  # standard deviation of a uniform integer in [-127, 127]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "chat_template.jinja")

# LlamaConfig arguments of each synthetic shape (Llama-2-7B's for "llama-7b").
SHAPES: dict[str, dict[str, Any]] = {
    "llama-7b": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                 "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000,
                 "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
    "tiny": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
             "intermediate_size": 688, "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
             "tie_word_embeddings": False},
}
COMMON = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "bos_token_id": 1,
          "eos_token_id": 2, "pad_token_id": 2, "initializer_range": INIT_STD, "use_cache": True}

# What llm-compressor's GPTQModifier(scheme="W8A8", ignore=["lm_head"]) records (compressed-tensors).
W8A8_QUANTIZATION_CONFIG: dict[str, Any] = {
    "quant_method": "compressed-tensors",
    "format": "int-quantized",
    "quantization_status": "compressed",
    "config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False,
                    "group_size": None, "block_structure": None, "actorder": None, "observer": "minmax",
                    "observer_kwargs": {}},
        "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                              "dynamic": True, "group_size": None, "block_structure": None, "actorder": None,
                              "observer": None, "observer_kwargs": {}},
        "output_activations": None,
    }},
    "ignore": ["lm_head"],
    "kv_cache_scheme": None,
    "sparsity_config": {},
}


def synthetic_config(name: str, fmt: str = "fp16") -> dict[str, Any]:
    """The config.json of a synthetic model (pure: no torch), with the quantization_config for w8a8."""
    if name not in SHAPES:
        raise ValueError(f"unknown synthetic shape {name!r} (known: {', '.join(SHAPES)})")
    if fmt not in FORMATS:
        raise ValueError(f"unknown synthetic format {fmt!r} (known: {', '.join(FORMATS)})")
    config = {**COMMON, **SHAPES[name], "dtype": "float16", "_name_or_path": f"synthetic-{name}-{fmt}"}
    config["head_dim"] = config["hidden_size"] // config["num_attention_heads"]
    if fmt == "w8a8":
        config["quantization_config"] = json.loads(json.dumps(W8A8_QUANTIZATION_CONFIG))
    return config


def parameter_layout(config: dict[str, Any]) -> tuple[list[tuple[str, tuple[int, ...]]], set[str]]:
    """(name, shape) of every saved tensor of the model, and the names of its quantisable Linear layers
    (every nn.Linear but lm_head), from a LlamaForCausalLM built on the meta device (no memory)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    args = {k: v for k, v in config.items() if k not in ("quantization_config", "architectures", "model_type",
                                                          "dtype", "_name_or_path")}
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**args))
    linears = {name for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and name != "lm_head"}
    layout = [(name, tuple(tensor.shape)) for name, tensor in model.state_dict().items()]
    return layout, linears


def _random_tensors(name: str, shape: tuple[int, ...], module: str | None, fmt: str, generator: Any) -> dict[str, Any]:
    import torch

    if module is not None and fmt == "w8a8":
        weight = torch.randint(-127, 128, shape, dtype=torch.int8, generator=generator)
        scale = torch.full((shape[0], 1), INIT_STD / INT8_STD, dtype=torch.float16)
        return {name: weight, f"{module}.weight_scale": scale}
    if name.endswith("norm.weight"):
        return {name: torch.ones(shape, dtype=torch.float16)}
    return {name: torch.empty(shape, dtype=torch.float16).normal_(0.0, INIT_STD, generator=generator)}


def build_synthetic(name: str, fmt: str, out_dir: Path, tokenizer_dir: Path, *, seed: int = 0,
                    shard_bytes: int = SHARD_BYTES) -> Path:
    """Write the synthetic model folder `out_dir` (created) and return it."""
    import torch
    from safetensors.torch import save_file

    config = synthetic_config(name, fmt)
    missing = [f for f in ("tokenizer.json", "tokenizer_config.json") if not (tokenizer_dir / f).exists()]
    if missing:
        raise FileNotFoundError(f"the tokenizer folder {tokenizer_dir} lacks {', '.join(missing)} (run "
                                "scripts/fetch_default_model.py for the embedded model's tokenizer)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for file in TOKENIZER_FILES:
        if (tokenizer_dir / file).exists():
            shutil.copy(tokenizer_dir / file, out_dir / file)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
         "pad_token_id": config["pad_token_id"]}, indent=2))

    layout, linears = parameter_layout(config)
    generator = torch.Generator().manual_seed(seed)
    shards: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    current_bytes = total = 0
    files: list[str] = []
    weight_map: dict[str, str] = {}

    def flush() -> None:
        nonlocal current, current_bytes
        if current:
            files.append(f"part-{len(files):05d}")  # renamed once the shard count is known
            save_file(current, str(out_dir / f"{files[-1]}.safetensors"), metadata={"format": "pt"})
            shards.append({key: files[-1] for key in current})
            current, current_bytes = {}, 0

    for tensor_name, shape in layout:
        module = tensor_name.removesuffix(".weight") if tensor_name.endswith(".weight") else None
        module = module if module in linears else None
        tensors = _random_tensors(tensor_name, shape, module, fmt, generator)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if current and current_bytes + size > shard_bytes:
            flush()
        current.update(tensors)
        current_bytes += size
        total += size
    flush()
    if len(files) == 1:
        (out_dir / f"{files[0]}.safetensors").rename(out_dir / "model.safetensors")
        return out_dir
    names = {part: f"model-{i + 1:05d}-of-{len(files):05d}.safetensors" for i, part in enumerate(files)}
    for part, final in names.items():
        (out_dir / f"{part}.safetensors").rename(out_dir / final)
    for shard in shards:
        weight_map.update({key: names[part] for key, part in shard.items()})
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    return out_dir
