"""Constrained decoding on the transformers engine (`response_format`, and `tool_choice` "required" or a named
function): xgrammar, the library vLLM uses by default.

Chosen by measurement (scripts/bench_constrained.py on the embedded SmolLM2-135M, vocabulary 49152, a
four-field JSON schema, AMD EPYC; docs/benchmarks.md "Constrained decoding"): xgrammar builds its
vocabulary table in 0.13 s once per tokenizer, compiles the schema in 4 ms and costs 0.2 ms a token
(mask filled and applied to the logits); lm-format-enforcer 1.1 s / 1 ms / 16 ms a token (and its
transformers integration does not import on transformers 5); outlines-core 0.35 s / 58 ms / 24 ms a token.
A decode step of the embedded model takes about 53 ms (TPOT, one stream), so only xgrammar is small beside it.

Each sequence has its own `GrammarMatcher`; the engine's scheduler fills one bitmask row per constrained
sequence and applies them to the batch's logits in one call (`apply_masks`), then advances each matcher
with the token its row sampled. Once the grammar is complete only the end-of-sequence tokens are allowed,
so the sequence ends with the grammar ("stop"). Whitespace between JSON tokens is the compact
`{"a": 1}` style (`any_whitespace=False`): a small model otherwise can pad forever with newlines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..types import StructuredOutput
from .errors import SchemaNotUsable

ANY_OBJECT = '{"type": "object"}'  # json_object: any JSON object (not a bare string or array)
_CPP_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*(Check failed: \(.*?\) is false:\s*)?")


def readable(error: BaseException) -> str:
    """xgrammar's C++ error without its timestamp and source location."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return _CPP_PREFIX.sub("", text).strip()


def validate(spec: StructuredOutput) -> None:
    """SchemaNotUsable when the schema cannot become a grammar (the vLLM engine checks here before queueing, so a
    bad schema is a 400, not a failure halfway through a stream; vLLM compiles with xgrammar too)."""
    import xgrammar as xgr

    if spec.json_object or not spec.json_schema:
        return
    try:
        xgr.Grammar.from_json_schema(spec.json_schema, any_whitespace=False)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise SchemaNotUsable(readable(exc)) from None


class Grammars:
    """The compiler for one tokenizer (its vocabulary table built once) and its compiled-grammar cache."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Iterable[int]) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.vocab_size = vocab_size
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=sorted(stop_token_ids))
        self._compiler = xgr.GrammarCompiler(info, max_threads=1)  # caches compiled schemas

    def compile(self, spec: StructuredOutput) -> Any:
        """The compiled grammar of a constraint; SchemaNotUsable (a 400) when the schema is not usable."""
        schema = ANY_OBJECT if spec.json_object or not spec.json_schema else spec.json_schema
        try:
            return self._compiler.compile_json_schema(schema, any_whitespace=False)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise SchemaNotUsable(readable(exc)) from None

    def matcher(self, compiled: Any) -> Any:
        return self._xgr.GrammarMatcher(compiled)

    def apply_masks(self, logits: Any, matchers: Sequence[Any | None]) -> None:
        """Mask each constrained row of `logits` [B, V] in place with its matcher's allowed tokens."""
        rows = [i for i, m in enumerate(matchers) if m is not None]
        if not rows:
            return
        bitmask = self._xgr.allocate_token_bitmask(len(matchers), self.vocab_size)
        for row in rows:
            matchers[row].fill_next_token_bitmask(bitmask, row)
        self._xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=rows)
