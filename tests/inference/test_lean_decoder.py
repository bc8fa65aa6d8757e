"""The lean CPU forward (inference/engines/lean_decoder.py, INFERENCE_CPU_FORWARD): the same logits as the
model's own forward on small random models of every supported kind (left-padded prefill, chunked prefill,
decode steps through the engine's cache), fused projections in float and int8, the models it leaves to their
own forward, and on the embedded model the same greedy tokens through load_transformers. Its speed is
measured in docs/benchmarks.md, not asserted here."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from transformers import DynamicCache

from inference.engines.batch import DecodeBatch, left_padded
from inference.engines.cpu_int8 import quantize_decoder
from inference.engines.lean_decoder import (
    LeanDecoder,
    _attention_mask,
    fuse_projections,
    unsupported,
)
from inference.engines.loading import load_transformers
from inference.settings import InferenceSettings

COMMON = {"vocab_size": 97, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False}


def _random(kind: str, **extra: object) -> torch.nn.Module:
    torch.manual_seed(0)
    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                    "qwen3": transformers.Qwen3Config, "mistral": transformers.MistralConfig}[kind]
    options = {**COMMON, **({"sliding_window": None} if kind == "mistral" else {}), **extra}
    model = transformers.AutoModelForCausalLM.from_config(config_class(**options)).eval()
    for p in model.parameters():  # non-trivial norm weights and biases
        torch.nn.init.normal_(p, mean=1.0 if p.dim() == 1 else 0.0, std=0.3 if p.dim() == 1 else 0.1)
    return model


def _own(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: object
         ) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                 use_cache=True, logits_to_keep=1).logits[:, -1, :]


def _generate(forward, model: torch.nn.Module, prompts: list[tuple[int, ...]], steps: int
              ) -> tuple[list[torch.Tensor], list[list[int]]]:
    """Prefill the prompts together (left-padded), then decode greedily through the engine's DecodeBatch."""
    ids, mask, positions = left_padded(prompts, 0, "cpu")
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        logits = [forward(ids, mask, positions, cache)]
        batch = DecodeBatch()
        batch.merge(cache, mask, list(range(len(prompts))), logits[0].argmax(-1).tolist())
        tokens = [list(batch.next_tokens)]
        for _ in range(steps):
            ids, mask, positions = batch.step_inputs()
            logits.append(forward(ids, mask, positions, batch.cache))
            batch.next_tokens = logits[-1].argmax(-1).tolist()
            tokens.append(list(batch.next_tokens))
    return logits, tokens


PROMPTS = [(5, 9, 13, 2, 7, 40, 41), (3, 4), (11, 12, 13, 14, 15)]


@pytest.mark.parametrize("kind,extra", [
    ("llama", {}),
    ("llama", {"head_dim": 32, "num_key_value_heads": 1}),  # head_dim not hidden / heads; one key head
    ("qwen2", {}),  # biases on q / k / v
    ("qwen3", {"head_dim": 16}),  # per-head q / k norms
    ("mistral", {"num_key_value_heads": 4}),  # no grouping
])
@pytest.mark.parametrize("fused", [False, True])
def test_the_same_logits_as_the_model_s_own_forward(kind: str, extra: dict, fused: bool) -> None:
    model = _random(kind, **extra)
    lean_model = copy.deepcopy(model)
    if fused:
        assert fuse_projections(lean_model) == 2 * COMMON["num_hidden_layers"]
        assert type(lean_model.model.layers[0].self_attn.q_proj).__name__ == "FusedPart"
    lean = LeanDecoder(lean_model)
    expected, expected_tokens = _generate(lambda *a: _own(model, *a), model, PROMPTS, 6)
    got, tokens = _generate(lean, lean_model, PROMPTS, 6)
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4)
    assert tokens == expected_tokens


def test_a_fused_model_still_runs_its_own_forward() -> None:
    model = _random("qwen2")
    fused = copy.deepcopy(model)
    fuse_projections(fused)
    ids = torch.tensor([PROMPTS[0]])
    with torch.inference_mode():
        torch.testing.assert_close(fused(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in model.parameters())


def test_a_prompt_prefilled_in_chunks_gives_the_logits_of_one_prefill() -> None:
    model = _random("llama")
    fuse_projections(model)
    lean = LeanDecoder(model)
    prompt = list(range(3, 20))
    with torch.inference_mode():
        whole = lean(torch.tensor([prompt]), torch.ones(1, 17, dtype=torch.long), torch.arange(17)[None],
                     DynamicCache(config=model.config))
        cache = DynamicCache(config=model.config)
        for start, end in ((0, 6), (6, 13), (13, 17)):
            last = lean(torch.tensor([prompt[start:end]]), torch.ones(1, end, dtype=torch.long),
                        torch.arange(start, end)[None], cache)
    torch.testing.assert_close(last, whole, rtol=1e-5, atol=1e-5)


def test_fused_int8_projections_multiply_as_the_separate_ones() -> None:
    model = _random("qwen2")
    fused = copy.deepcopy(model)
    quantize_decoder(model)
    quantize_decoder(fused, fuse=True)
    assert type(fused.model.layers[0].self_attn.qkv_proj).__name__ == "Int8Linear"
    for rows in (1, 3):  # one row takes fbgemm's fused kernel, more take torch._int_mm
        prompts = PROMPTS[:rows]
        expected, expected_tokens = _generate(LeanDecoder(model), model, prompts, 4)
        got, tokens = _generate(LeanDecoder(fused), fused, prompts, 4)
        for want, have in zip(expected, got):
            torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5)
        assert tokens == expected_tokens


def test_the_mask_sees_earlier_real_columns_and_always_itself() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    allowed = _attention_mask(mask, 3)[:, 0]  # queries at columns 2, 3, 4
    assert allowed[0].int().tolist() == [[0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]
    assert allowed[1].int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    padded_query = _attention_mask(torch.tensor([[0, 0, 1]]), 3)[0, 0]
    assert padded_query.int().tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]  # never a fully masked row
    assert _attention_mask(torch.ones(2, 4, dtype=torch.long), 1) is None
    assert _attention_mask(mask, 1).shape == (2, 1, 1, 5)


def test_models_it_cannot_run_keep_their_own_forward() -> None:
    assert unsupported(_random("llama")) is None
    assert "sliding-window" in (unsupported(_random("mistral", sliding_window=4)) or "")
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    assert "gpt2" in (unsupported(gpt2) or "")
    with pytest.raises(ValueError, match="lean forward"):
        LeanDecoder(gpt2)
    assert "activation" in (unsupported(_random("llama", hidden_act="gelu")) or "")


def test_the_setting_is_validated() -> None:
    with pytest.raises(ValueError):
        InferenceSettings(cpu_forward="fast")


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_the_embedded_model_gives_the_same_greedy_tokens_on_either_forward(quantization: str) -> None:
    own = load_transformers(InferenceSettings(cpu_forward="transformers", cpu_gemm="native", warmup=False,
                                              quantization=quantization))
    lean = load_transformers(InferenceSettings(cpu_forward="lean", cpu_gemm="native", warmup=False,
                                               quantization=quantization))
    assert own.forward is None and "own forward" not in own.info.dtype_reason
    assert isinstance(lean.forward, LeanDecoder) and "lean forward" in lean.info.dtype_reason
    prompts = [tuple(range(200, 230)), tuple(range(500, 512)), (1, 2, 3, 4, 5, 6, 7, 8)]
    expected, expected_tokens = _generate(lambda *a: _own(own.model, *a), own.model, prompts, 24)
    got, tokens = _generate(lean.forward, lean.model, prompts, 24)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-3, atol=1e-3)
    assert tokens == expected_tokens
