"""W8A8 (SmoothQuant + GPTQ, compressed-tensors) for scripts/quantize.py, run in .venv-w8a8.

How the model stays off the GPU (read in llmcompressor 0.14.0.1 / compressed-tensors 0.19.0):

- We load the model ourselves on the CPU (no device_map) and hand the object to `oneshot`;
  entrypoints/utils.py `pre_process` only loads when given a path (lines 61-63) and converts an
  accelerate `hf_device_map` to compressed-tensors offloading (lines 92-93), which we avoid.
- `oneshot(pipeline="independent")` is the default (entrypoints/oneshot.py line 351): the
  independent pipeline (pipelines/independent/pipeline.py lines 38-45) gives each modifier its
  own pipeline from `CalibrationPipeline.from_modifiers([modifier])`, which is "sequential" for
  both SmoothQuant and GPTQ because they need calibration data (pipelines/registry.py lines 56-58).
  SmoothQuant therefore smooths every layer before GPTQ collects its Hessians. We do not pass
  pipeline="sequential": it would run both modifiers in one pass, and GPTQ would take Hessians of
  activations that SmoothQuant rescales afterwards (SmoothQuant smooths in
  `on_sequential_epoch_end`, transform/smoothquant/base.py lines 152-153, the same event at which
  GPTQ compresses, gptq/base.py lines 231-238).
- pipelines/sequential/pipeline.py lines 85-87: `onload_device = get_main_device()` (cuda:0 when
  `torch.accelerator.is_available()`, else cpu: utils/dev.py lines 167-172) and
  `set_onload_device(model, onload_device)`: compressed_tensors/offload/dispatch.py lines 55-61
  wraps every module's parameters in an `OffloadCache` whose offload device is where the module
  is now (the CPU) and onload device the GPU; offload/cache/base.py `__getitem__` copies a weight
  to the GPU when the forward reads it. Lines 97-110 split the model at `sequential_targets`
  (default `_no_split_modules`, i.e. LlamaDecoderLayer: utils/pytorch/module.py lines 166-168)
  and lines 136-178 run one subgraph (one decoder layer) at a time inside `disable_offloading()`,
  which keeps only that layer's weights on the GPU and drops them on exit (cache/base.py
  lines 253-268). Activations between layers are cached on `sequential_offload_device="cpu"`.
  So the GPU holds one fp16 decoder layer, its GPTQ Hessians and one batch of activations.
- On the CPU alone `--device cpu` hides GPUs (CUDA_VISIBLE_DEVICES="") so get_main_device()
  returns cpu; onload and offload are then the same device.
- lm_head: `calibration_forward_context` replaces its forward with a meta-device matmul but its
  input hooks still fire (utils/helpers.py lines 166-198), so GPTQ can calibrate it. When the
  recipe targets lm_head of a model with tied embeddings, the quantisation mixin unties them
  (modifiers/quantization/quantization/mixin.py lines 248-250: `untie_word_embeddings`, which
  clones both tables and sets `tie_word_embeddings = False`); `_retie_embeddings` at save time
  (transformers/compression/compressed_tensors_utils.py lines 43-85) re-ties only identical
  tensors, so the checkpoint keeps a 16-bit embedding table plus an int8 lm_head.
- vLLM 0.32 serves an int8 lm_head: compressed_tensors.py `get_quant_method`, lines 186-193 (a
  `ParallelLMHead` with a scheme gets `CompressedTensorsLinearMethod`) and logits_processor.py
  lines 144-145 (`lm_head.quant_method.apply`). Its target matching (compressed_tensors/utils.py
  `find_matched_target`) compares the layer name and the class name `ParallelLMHead`, which does
  not contain "Linear": the recipe therefore targets "lm_head" by name as well, so the saved
  config group lists it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def recipe_targets(quantize_lm_head: bool) -> tuple[list[str], list[str]]:
    """(targets, ignore) for GPTQModifier. "lm_head" comes first: compressed-tensors' match_named_modules
    stops at a module's first matching target and warns about targets that matched nothing."""
    if quantize_lm_head:
        return ["lm_head", "Linear"], []
    return ["Linear"], ["lm_head"]


def build_recipe(quantize_lm_head: bool) -> list:
    from llmcompressor.modifiers.quantization import GPTQModifier
    try:
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
    except ImportError:  # llmcompressor < 0.10
        from llmcompressor.modifiers.smoothquant import SmoothQuantModifier
    targets, ignore = recipe_targets(quantize_lm_head)
    return [SmoothQuantModifier(smoothing_strength=0.8), GPTQModifier(targets=targets, scheme="W8A8", ignore=ignore)]


def calibrate(model, tokenizer, calibration: list[str], *, quantize_lm_head: bool, max_length: int = 512) -> int:
    """Run SmoothQuant + GPTQ in place on a model that lives in CPU RAM; returns the calibration tokens."""
    from datasets import Dataset
    from llmcompressor import oneshot

    rows = [tokenizer(t, truncation=True, max_length=max_length) for t in calibration]
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]} for r in rows])
    oneshot(model=model, processor=tokenizer, dataset=dataset, recipe=build_recipe(quantize_lm_head),
            max_seq_length=max_length,
            num_calibration_samples=len(rows), shuffle_calibration_samples=False,  # unseeded RandomSampler
            pipeline="independent",
            sequential_targets=list(getattr(model, "_no_split_modules", None) or []) or None,
            sequential_offload_device="cpu")
    return sum(len(r["input_ids"]) for r in rows)


def release_traced_namespaces(model) -> int:
    """Let the calibrated model be freed. The sequential pipeline recompiles forward() in a copy of
    the modeling module's globals holding `self` (pipelines/sequential/ast_helpers.py lines 105-122)
    and torch.fx.wrap keeps every wrapping frame's globals in a module-level dict for ever
    (torch/fx/_symbolic_trace.py `_wrapped_fns_to_patch`, line 1356): without this, the full-precision
    model stays in RAM beside the reloaded one (2 x 13.5 GB for a 7B model). Returns entries dropped."""
    try:
        from torch.fx import _symbolic_trace
        registry = _symbolic_trace._wrapped_fns_to_patch
    except (ImportError, AttributeError):
        return 0
    ours = {id(module) for module in model.modules()}
    stale = [key for key, namespace in list(registry.items()) if id(namespace.get("self")) in ours]
    for key in stale:
        registry.pop(key, None)
    return len(stale)


def onload_for_forward(model, device: str):
    """Keep the weights in CPU RAM and copy each module's to `device` for its forward (the same
    compressed-tensors mechanism the sequential pipeline uses), for perplexity on a small GPU."""
    if device == "cuda":
        from compressed_tensors.offload import set_onload_device
        set_onload_device(model, "cuda:0")
    return model


def safetensors_dtypes(folder: Path) -> dict[str, str]:
    """Tensor name -> dtype from the safetensors headers (no tensor is read)."""
    out: dict[str, str] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(size))
        out.update({name: meta["dtype"] for name, meta in header.items() if name != "__metadata__"})
    return out


def lm_head_state(folder: Path) -> dict[str, Any]:
    """What the saved checkpoint holds for lm_head: int8 or not, tied or not, and whether the
    config group that vLLM matches lists it."""
    config = json.loads((folder / "config.json").read_text())
    quant = config.get("quantization_config") or {}
    dtypes = safetensors_dtypes(folder)
    targets = [t for group in (quant.get("config_groups") or {}).values() for t in group.get("targets", [])]
    text = config.get("text_config") or config
    return {"weight_dtype": dtypes.get("lm_head.weight"), "has_scale": "lm_head.weight_scale" in dtypes,
            "int8": dtypes.get("lm_head.weight") == "I8",
            "in_ignore": any("lm_head" in str(name) for name in quant.get("ignore") or []),
            "targeted_by_name": any(t == "lm_head" or (t.startswith("re:") and "lm_head" in t) for t in targets),
            "embedding_dtype": dtypes.get("model.embed_tokens.weight"),
            "tie_word_embeddings": bool(text.get("tie_word_embeddings", False))}


def tied_note(tied_in_source: bool, vocab: int, hidden: int) -> str:
    if tied_in_source:
        return (f"the source ties lm_head to the embedding table: quantising lm_head unties them, so the "
                f"checkpoint keeps the 16-bit table for the embedding and adds an int8 lm_head "
                f"(+{vocab * hidden / 2**20:.1f} MiB plus scales): more memory, fewer bytes read per token")
    return (f"lm_head in int8 saves {vocab * hidden / 2**20:.1f} MiB of weights "
            f"(vocab {vocab} x hidden {hidden}) against 16-bit")
