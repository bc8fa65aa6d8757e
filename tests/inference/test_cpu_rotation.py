"""The int8 mode's rotations (inference/engines/cpu_rotation.py): orthogonal pieces, the same model in float
(unit-sized layers, then the embedded model's logits and greedy text), models it leaves alone. Their effect on
perplexity is measured in docs/benchmarks.md, not asserted here."""

from __future__ import annotations

import copy

import pytest
import torch

from inference.engines.cpu_int8 import quantize_decoder
from inference.engines.cpu_rotation import (
    HadamardInput,
    _hadamard,
    hadamard_block,
    rotate,
)


@pytest.mark.parametrize("n", [1, 2, 64, 512])
def test_hadamard_is_orthogonal(n: int) -> None:
    h = _hadamard(n)
    torch.testing.assert_close(h @ h.t(), torch.eye(n), rtol=0, atol=1e-5)


def test_hadamard_block_is_the_largest_power_of_two_dividing() -> None:
    assert [hadamard_block(k) for k in (1536, 11008, 576, 4096, 7)] == [512, 256, 64, 512, 1]


@pytest.mark.parametrize("bias", [False, True])
def test_hadamard_input_gives_the_linear_s_output(bias: bool) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(1536, 96, bias=bias)
    x = torch.randn(3, 5, 1536)
    expected = linear(x).detach()
    wrapped = HadamardInput(linear, torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), expected, rtol=1e-4, atol=1e-4)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Linear(8, 8))
        self.lm_head = torch.nn.Linear(8, 4, bias=False)


def test_a_model_that_is_not_llama_style_is_left_alone() -> None:
    model = Tiny()
    before = [p.detach().clone() for p in model.parameters()]
    assert rotate(model) is None
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert quantize_decoder(model).rotation is None


@pytest.mark.parametrize("kind", ["llama", "qwen2"])  # qwen2: biases on q / k / v; untied, grouped-query heads
def test_a_small_random_model_is_the_same_in_float_and_rotation_can_be_turned_off(kind: str) -> None:
    import transformers

    torch.manual_seed(0)
    common = {"vocab_size": 97, "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False}
    config = (transformers.LlamaConfig(**common) if kind == "llama" else transformers.Qwen2Config(**common))
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    for p in model.parameters():  # non-trivial norm weights and biases, so folding them is checked
        torch.nn.init.normal_(p, mean=1.0 if p.dim() == 1 else 0.0, std=0.3 if p.dim() == 1 else 0.05)
    ids = torch.randint(0, 97, (2, 11))
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    plain = copy.deepcopy(model)
    assert rotate(model) is not None
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-4, atol=1e-4)
    assert quantize_decoder(plain, rotation=False).rotation is None  # INFERENCE_INT8_ROTATION=false
    assert type(plain.model.layers[0].mlp.down_proj).__name__ == "Int8Linear"


@pytest.mark.slow
def test_the_rotated_embedded_model_is_the_same_model_in_float() -> None:
    from inference.engines.loading import load_transformers
    from inference.settings import InferenceSettings

    loaded = load_transformers(InferenceSettings(cpu_gemm="native", cpu_forward="transformers", warmup=False))
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        text_before = tokenizer.decode(model.generate(ids, max_new_tokens=16, do_sample=False)[0])
    tied = model.lm_head.weight is model.get_input_embeddings().weight
    assert rotate(model) is not None
    assert type(model.model.layers[0].mlp.down_proj).__name__ == "HadamardInput"
    assert (model.lm_head.weight is model.get_input_embeddings().weight) == tied  # the embedding is untouched
    with torch.inference_mode():
        after = model(input_ids=ids).logits
        text_after = tokenizer.decode(model.generate(ids, max_new_tokens=16, do_sample=False)[0])
    torch.testing.assert_close(after, before, rtol=1e-3, atol=2e-3)
    assert text_after == text_before and "Paris" in text_after


@pytest.mark.slow
def test_int8_with_rotation_answers_and_says_so() -> None:
    from inference.engines.loading import load_transformers
    from inference.settings import InferenceSettings

    loaded = load_transformers(InferenceSettings(quantization="int8", int8_rotation=True, warmup=False))
    assert "rotated" in loaded.info.dtype_reason and "torch._int_mm" in loaded.info.dtype_reason
    tokenizer = loaded.tokenizer
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.inference_mode():
        out = loaded.model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
