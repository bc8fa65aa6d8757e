"""Constrained decoding on the transformers engine: which library (issue #18), measured on the embedded model.

For each installed candidate (xgrammar, lm-format-enforcer, outlines-core) it prints, for one JSON schema
(a pydantic model of four fields):
- the one-time cost per tokenizer (the vocabulary table the library builds),
- the compile time of the schema,
- the per-token cost of the mask during decoding (computing the allowed tokens and applying them to a
  [1, vocab] float32 logits tensor), walked over the tokens of a valid answer.

    .venv/bin/python scripts/bench_constrained.py [--model models/SmolLM2-135M-Instruct] [--repeat 3]

Only xgrammar is a dependency (the `cpu` extra); to compare, `pip install lm-format-enforcer outlines-core`.
The figures and the choice are in docs/benchmarks.md ("Constrained decoding").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent


class Ticket(BaseModel):
    title: str
    priority: int
    tags: list[str]
    urgent: bool


ANSWER = json.dumps({"title": "Printer on floor 3 is jammed", "priority": 2, "tags": ["hardware", "office"],
                     "urgent": False})


def bench_xgrammar(tokenizer, schema: str, answer: list[int], vocab: int) -> dict[str, float]:
    import torch
    import xgrammar as xgr

    t0 = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
    compiler = xgr.GrammarCompiler(info, cache_enabled=False)
    t1 = time.perf_counter()
    compiled = compiler.compile_json_schema(schema)
    t2 = time.perf_counter()
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
    logits = torch.randn(1, vocab)
    steps = []
    for token in answer:
        s = time.perf_counter()
        matcher.fill_next_token_bitmask(bitmask)
        xgr.apply_token_bitmask_inplace(logits, bitmask)
        assert matcher.accept_token(token), "the answer should be valid"
        steps.append(time.perf_counter() - s)
    return {"setup_s": t1 - t0, "compile_s": t2 - t1, "per_token_ms": 1000 * statistics.median(steps)}


def bench_lmfe(tokenizer, schema: str, answer: list[int], vocab: int) -> dict[str, float]:
    import torch
    from lmformatenforcer import (
        JsonSchemaParser,
        TokenEnforcer,
        TokenEnforcerTokenizerData,
    )

    # its transformers integration does not import on transformers 5 (it imports transformers.tokenization_utils),
    # so the tokenizer data is built through its documented constructor, as that integration does
    t0 = time.perf_counter()
    special = set(tokenizer.all_special_ids)
    zero = tokenizer.encode("0", add_special_tokens=False)[0]
    regular = []
    for tid in range(len(tokenizer)):
        if tid in special:
            continue
        after_zero, alone = tokenizer.decode([zero, tid])[1:], tokenizer.decode([tid])
        regular.append((tid, after_zero, len(after_zero) > len(alone)))
    data = TokenEnforcerTokenizerData(regular, lambda ids: tokenizer.decode(ids).rstrip("\ufffd"),
                                      tokenizer.eos_token_id, False, vocab)
    t1 = time.perf_counter()
    enforcer = TokenEnforcer(data, JsonSchemaParser(json.loads(schema)))
    enforcer.get_allowed_tokens([])
    t2 = time.perf_counter()
    logits = torch.randn(1, vocab)
    steps, prefix = [], []
    for token in answer:
        s = time.perf_counter()
        allowed = enforcer.get_allowed_tokens(prefix).allowed_tokens
        mask = torch.full((vocab,), float("-inf"))
        mask[allowed] = 0
        logits[0] += mask
        steps.append(time.perf_counter() - s)
        prefix.append(token)
    return {"setup_s": t1 - t0, "compile_s": t2 - t1, "per_token_ms": 1000 * statistics.median(steps)}


def bench_outlines_core(tokenizer, schema: str, answer: list[int], vocab: int) -> dict[str, float]:
    import torch
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    t0 = time.perf_counter()
    eos = tokenizer.eos_token_id
    table: dict[str, list[int]] = {}
    for token, tid in tokenizer.get_vocab().items():  # byte-level tokens ("Ġword") as the text they stand for
        if tid != eos and tid not in tokenizer.all_special_ids:
            table.setdefault(tokenizer.convert_tokens_to_string([token]), []).append(tid)
    vocabulary = Vocabulary(eos, table)
    t1 = time.perf_counter()
    index = Index(build_regex_from_schema(schema), vocabulary)
    t2 = time.perf_counter()
    guide = Guide(index)
    logits = torch.randn(1, vocab)
    steps = []
    for token in answer:
        s = time.perf_counter()
        allowed = guide.get_tokens()
        mask = torch.full((vocab,), float("-inf"))
        mask[allowed] = 0
        logits[0] += mask
        guide.advance(token)
        steps.append(time.perf_counter() - s)
    return {"setup_s": t1 - t0, "compile_s": t2 - t1, "per_token_ms": 1000 * statistics.median(steps)}


CANDIDATES = {"xgrammar": bench_xgrammar, "lm-format-enforcer": bench_lmfe, "outlines-core": bench_outlines_core}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "SmolLM2-135M-Instruct")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    vocab = AutoConfig.from_pretrained(str(args.model)).vocab_size
    schema = json.dumps(Ticket.model_json_schema())
    answer = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    print(f"model {args.model.name}, vocabulary {vocab}, schema {len(schema)} chars, answer {len(answer)} tokens")
    print(f"{'library':<20}{'setup s':>10}{'compile s':>11}{'per token ms':>14}")
    for name, bench in CANDIDATES.items():
        runs = []
        for _ in range(args.repeat):
            try:
                runs.append(bench(tokenizer, schema, answer, vocab))
            except ImportError as exc:
                print(f"{name:<20}not installed ({exc.name})")
                break
            except Exception as exc:  # a candidate that cannot do it is reported, not fatal
                print(f"{name:<20}failed: {type(exc).__name__}: {exc}")
                break
        if runs:
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"{name:<20}{med['setup_s']:>10.3f}{med['compile_s']:>11.3f}{med['per_token_ms']:>14.3f}")


if __name__ == "__main__":
    main()
