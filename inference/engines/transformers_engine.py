"""transformers engine with iteration-level (continuous) batching.

One engine thread owns the model. Each iteration it (1) drops aborted
sequences, (2) prefills at most max_prefill_tokens prompt tokens of waiting
sequences into free slots (whole prompts together, a longer one in chunks over
several iterations: prefill.py), merging them into the running batch, and (3)
runs one decode step for every running sequence. A request joins at the next
iteration; a finished or cancelled one leaves at the next iteration. Requests
never wait for each other to finish.

A constrained sequence (response_format, tool_choice) carries its own xgrammar matcher: each step the
batch's logits get one bitmask row per constrained sequence (structured.py) before sampling. Log-
probabilities are of the model's raw distribution (before penalties, temperature and masks), as vLLM's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import torch
from transformers import DynamicCache

from ..settings import InferenceSettings
from ..types import (EngineInfo, EngineStats, GenerationDelta, GenerationRequest, ParsedToolCalls, StructuredOutput,
                     TokenLogprob)
from .batch import DecodeBatch, left_padded
from .chat_template import TokenizerMethods, parse_hermes
from .detokenizer import IncrementalDetokenizer
from .errors import EngineNotRunning, GenerationFailed, PromptEmpty
from .loading import load_transformers, unloaded_info
from .memory import IdleTrim
from .prefill import Chunked, plan_step
from .prefix_cache import PrefixCache
from .sampling import sample_next_tokens, token_logprobs
from .sequence import SequenceState, put_all, settle
from .structured import Grammars

log = logging.getLogger("inference.engine")

CPU_PREFIX_CACHE_MB = 1024  # INFERENCE_PREFIX_CACHE_MB's default on a CPU (about 22k tokens of the embedded model)


class TransformersEngine(TokenizerMethods):
    def __init__(self, settings: InferenceSettings) -> None:
        self._settings = settings
        self._model: Any = None
        self._lean: Any = None  # lean_decoder.LeanDecoder, or None: the model's own forward
        self._tokenizer: Any = None  # for the event loop (chat templates, tokenize)
        self._decode_tokenizer: Any = None  # a second instance owned by the engine thread
        self._info: EngineInfo | None = None
        self._eos: frozenset[int] = frozenset()
        self._pad_id = 0
        self._device: Any = None
        self._max_model_len = 0
        self._grammars: Grammars | None = None  # built at the first constrained request

        self._incoming: deque[SequenceState] = deque()
        self._waiting: deque[SequenceState] = deque()
        self._batch = DecodeBatch()
        self._chunked: Chunked | None = None  # the prompt being prefilled chunk by chunk
        self._wakeup = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._alive = False
        self._shared_generator = torch.Generator()
        self._shared_generator.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)

        self._trim = IdleTrim(settings.memory_trim_interval_s)
        self._prefixes = PrefixCache(0)  # sized in _load, once the device is known
        self._steps = 0
        self._step_sequences = 0
        self._max_batch = 0
        self._prefills = 0
        self._aborted = 0

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """The engine thread loads the model, then runs every forward (oneDNN weights prepacked in another live
        thread made a decode step 1.4-1.8x as long: AMD EPYC, docs/benchmarks.md "oneDNN prepacked linears")."""
        loaded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(target=self._load_and_run, args=(loaded,), name="engine-loop", daemon=True)
        self._thread.start()
        await loaded

    def _load(self) -> None:
        loaded = load_transformers(self._settings)
        self._model, self._device, self._lean = loaded.model, loaded.device, loaded.forward
        self._tokenizer, self._decode_tokenizer = loaded.tokenizer, loaded.decode_tokenizer
        self._eos, self._pad_id = loaded.eos, loaded.pad_id
        self._max_model_len = loaded.info.max_model_len
        self._info = loaded.info
        mib = self._settings.prefix_cache_mb
        if mib is None:
            mib = CPU_PREFIX_CACHE_MB if str(self._device).startswith("cpu") else 0
        self._prefixes = PrefixCache(mib << 20)

    async def close(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        self._fail_all(EngineNotRunning("The engine was shut down."))
        self._alive = False
        self._model = None
        self._prefixes.clear()

    # ---- protocol ----------------------------------------------------------------------

    def info(self) -> EngineInfo:
        return self._info or unloaded_info("transformers", self._settings)

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self._batch) + (self._chunked is not None),
            waiting=len(self._waiting) + len(self._incoming),
            steps_total=self._steps,
            step_sequences_total=self._step_sequences,
            max_batch_size=self._max_batch,
            prefills_total=self._prefills,
            aborted_total=self._aborted,
            prefix_cache_queries_total=self._prefixes.queried_tokens,
            prefix_cache_hits_total=self._prefixes.hit_tokens,
            alive=self._alive and (self._thread is not None and self._thread.is_alive()),
        )

    async def health(self) -> bool:
        return self.stats().alive

    def parse_tool_calls(self, text: str) -> ParsedToolCalls:
        return parse_hermes(text)

    def check_structured(self, spec: StructuredOutput) -> None:
        self._compile(spec)

    def _compile(self, spec: StructuredOutput) -> Any:
        if self._grammars is None:
            if self._model is None:
                raise EngineNotRunning("The engine is not running.")
            vocab = int(self._model.get_output_embeddings().out_features)  # lm_head may be prepacked: no .weight
            self._grammars = Grammars(self._tokenizer, vocab, self._eos)
        return self._grammars.compile(spec)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        if not self._alive:
            raise EngineNotRunning("The engine is not running.")
        if not request.prompt_token_ids:
            raise PromptEmpty()
        generator = None
        if request.params.seed is not None and not request.params.greedy:
            generator = torch.Generator()
            generator.manual_seed(request.params.seed & 0x7FFF_FFFF_FFFF_FFFF)
        seq = SequenceState(
            request=request, loop=asyncio.get_running_loop(), queue=asyncio.Queue(),
            detok=IncrementalDetokenizer(self._decode_tokenizer, request.params.stop), generator=generator,
        )
        if request.params.structured is not None:
            seq.matcher = self._grammars_matcher(request.params.structured)
        self._incoming.append(seq)
        self._wakeup.set()
        try:
            while True:
                item = await seq.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not seq.done:
                seq.aborted = True
                self._wakeup.set()

    def _grammars_matcher(self, spec: StructuredOutput) -> Any:
        compiled = self._compile(spec)  # cached: serving compiled it already in check_structured
        assert self._grammars is not None
        return self._grammars.matcher(compiled)

    # ---- engine thread -----------------------------------------------------------------

    def _load_and_run(self, loaded: asyncio.Future[None]) -> None:
        error: BaseException | None = None
        try:
            self._load()
        except BaseException as exc:
            error = exc
        self._alive = error is None
        try:
            loaded.get_loop().call_soon_threadsafe(settle, loaded, error)
        except RuntimeError:  # the loop that started us is closed
            self._alive = False
        if self._alive:
            self._run()

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while not self._stopping:
                    while self._incoming:
                        self._waiting.append(self._incoming.popleft())
                    self._drop_aborted()
                    if not self._batch.rows and not self._waiting and self._chunked is None:
                        self._trim.idle()  # freed memory back to the OS (inference/engines/memory.py)
                        self._wakeup.wait(timeout=1.0)
                        self._wakeup.clear()
                        continue
                    self._trim.busy = True
                    outbox: list[tuple[SequenceState, GenerationDelta | BaseException]] = []
                    self._prefill_step(outbox)
                    if self._batch.rows:
                        try:
                            self._decode_step(outbox)
                        except Exception as exc:  # the running batch cannot go on: fail it, keep serving
                            log.exception("decode step failed")
                            self._fail(self._batch.rows, exc, outbox)
                            self._batch.clear()
                    self._deliver(outbox)
        finally:
            self._alive = False

    @staticmethod
    def _fail(seqs: Sequence[SequenceState], exc: Exception, outbox: list) -> None:
        error = GenerationFailed(f"generation failed: {type(exc).__name__}")
        for seq in list(seqs):
            if not seq.done:
                seq.done = True
                outbox.append((seq, error))

    def _deliver(self, outbox: list[tuple[SequenceState, GenerationDelta | BaseException]]) -> None:
        if not outbox:
            return
        outbox[0][0].loop.call_soon_threadsafe(put_all, outbox)  # every sequence lives on the server's one loop

    def _drop_aborted(self) -> None:
        if any(s.aborted for s in self._waiting):
            kept = [s for s in self._waiting if not s.aborted]
            self._aborted += len(self._waiting) - len(kept)
            for s in self._waiting:
                if s.aborted:
                    s.done = True
            self._waiting = deque(kept)
        if self._chunked is not None and self._chunked.seq.aborted:
            self._chunked.seq.done = True
            self._chunked = None
            self._aborted += 1
        if any(s.aborted for s in self._batch.rows):
            keep = [i for i, s in enumerate(self._batch.rows) if not s.aborted]
            for s in self._batch.rows:
                if s.aborted:
                    s.done = True
                    self._aborted += 1
            self._batch.keep(keep)

    def _prefill_step(self, outbox: list) -> None:
        """This iteration's prefill work: a chunk of the chunked prompt, then whole prompts that fit."""
        free = self._settings.max_num_seqs - len(self._batch) - (self._chunked is not None)
        if self._chunked is None and free > 0 and self._waiting and self._prefixes.enabled:
            self._chunked = self._from_prefix(self._waiting[0])
            if self._chunked is not None:
                self._waiting.popleft()
                free -= 1
        plan = plan_step(self._waiting, self._chunked, free, self._settings.max_prefill_tokens)
        if plan.start is not None:
            self._chunked = Chunked(plan.start, DynamicCache(config=self._model.config))
        if self._chunked is not None and plan.chunk:
            chunked = self._chunked
            try:
                self._prefill_chunk(chunked, plan.chunk, outbox)
            except Exception as exc:  # only this sequence fails
                log.exception("prefill failed")
                self._chunked = None
                self._fail([chunked.seq], exc, outbox)
        if plan.whole:
            try:
                self._prefill(plan.whole, outbox)
            except Exception as exc:  # only the sequences being admitted fail
                log.exception("prefill failed")
                self._fail(plan.whole, exc, outbox)

    def _from_prefix(self, seq: SequenceState) -> Chunked | None:
        """A waiting sequence whose prompt begins with a cached prefix: only the rest is prefilled (the chunked
        path, into a copy of the prefix)."""
        if seq.looked_up:
            return None
        seq.looked_up = True
        found = self._prefixes.start(seq.request.prompt_token_ids, self._model.config)
        if found is None:
            return None
        seq.prefix, cache = found
        return Chunked(seq, cache, done=seq.prefix.length)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        if self._lean is not None:
            return self._lean(ids, mask, positions, cache)
        out = self._model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                          use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :]

    def _prefill(self, seqs: list[SequenceState], outbox: list) -> None:
        ids, mask, positions = left_padded([s.request.prompt_token_ids for s in seqs], self._pad_id, self._device)
        cache = DynamicCache(config=self._model.config)
        logits = self._forward(ids, mask, positions, cache)
        self._prefills += 1
        self._join(seqs, logits, cache, mask, outbox)

    def _prefill_chunk(self, chunked: Chunked, size: int, outbox: list) -> None:
        ids, mask, positions = chunked.inputs(size, self._device)
        logits = self._forward(ids, mask, positions, chunked.cache)
        chunked.done += size
        self._prefills += 1
        if not chunked.remaining:
            self._chunked = None
            self._join([chunked.seq], logits, chunked.cache, mask, outbox)

    def _join(self, seqs: list[SequenceState], logits: torch.Tensor, cache: Any, mask: torch.Tensor, outbox: list) -> None:
        """Sample the first token of freshly prefilled sequences; those not finished by it join the batch."""
        tokens = self._sample(logits, seqs)
        keep, next_tokens = [], []
        for row, (seq, token) in enumerate(zip(seqs, tokens)):
            if not self._accept(seq, token, outbox):
                keep.append(row)
                next_tokens.append(token)
        if not keep:
            return
        if len(keep) < len(seqs):
            index = torch.tensor(keep, dtype=torch.long, device=mask.device)
            for layer in cache.layers:
                layer.keys = layer.keys.index_select(0, index)
                layer.values = layer.values.index_select(0, index)
            mask = mask.index_select(0, index)
        self._batch.merge(cache, mask, [seqs[i] for i in keep], next_tokens)

    def _decode_step(self, outbox: list) -> None:
        batch = self._batch
        ids, mask, positions = batch.step_inputs()
        logits = self._forward(ids, mask, positions, batch.cache)
        size = len(batch)
        self._steps += 1
        self._step_sequences += size
        self._max_batch = max(self._max_batch, size)
        tokens = self._sample(logits, batch.rows)
        keep = []
        for row, (seq, token) in enumerate(zip(batch.rows, tokens)):
            batch.next_tokens[row] = token
            if not self._accept(seq, token, outbox):
                keep.append(row)
            elif self._prefixes.enabled:  # its cache, for a prompt that continues it
                self._prefixes.keep_row(batch.cache, batch.mask, row, [*seq.request.prompt_token_ids,
                                                                        *seq.generated[:-1]], seq.prompt_len, seq.prefix)
        batch.keep(keep)

    def _sample(self, logits: torch.Tensor, seqs: Sequence[SequenceState]) -> list[int]:
        logits = logits.float().cpu() if logits.device.type != "cpu" else logits.float()
        wanted = [i for i, s in enumerate(seqs) if s.request.params.logprobs is not None]
        raw = logits[wanted].clone() if wanted else None
        if self._grammars is not None and any(s.matcher is not None for s in seqs):
            self._grammars.apply_masks(logits, [s.matcher for s in seqs])
        tokens = sample_next_tokens(
            logits, [s.request.params for s in seqs], [s.generated for s in seqs], [s.generator for s in seqs],
            self._shared_generator, [s.request.prompt_token_ids for s in seqs])
        if raw is not None:
            found = token_logprobs(raw, [tokens[i] for i in wanted], [seqs[i].request.params.logprobs or 0
                                                                      for i in wanted])
            for i, (chosen, top) in zip(wanted, found):
                seqs[i].pending_logprobs.append(TokenLogprob(
                    self._token_text(tokens[i]), chosen, tuple((self._token_text(t), lp) for t, lp in top)))
        return tokens

    def _token_text(self, token: int) -> str:
        return str(self._decode_tokenizer.decode([token]))

    def _accept(self, seq: SequenceState, token: int, outbox: list) -> bool:
        """Record one sampled token; queue the delta. True when the sequence finished."""
        delta = seq.accept(token, self._eos, self._max_model_len)
        if delta is not None:
            outbox.append((seq, delta))
        return seq.done

    def _fail_all(self, error: BaseException) -> None:
        outbox = []
        chunked = [self._chunked.seq] if self._chunked is not None else []
        self._chunked = None
        for seq in list(self._batch.rows) + chunked + list(self._waiting) + list(self._incoming):
            if not seq.done:
                seq.done = True
                outbox.append((seq, error))
        self._batch.clear()
        self._waiting.clear()
        self._incoming.clear()
        for seq, item in outbox:
            try:
                seq.loop.call_soon_threadsafe(seq.queue.put_nowait, item)
            except RuntimeError:
                pass  # its loop is closed
