"""POST /tokenize and /detokenize, as vLLM answers them: the tokens of a chat or a prompt with their count
and the context window (for clients that trim), optionally each token's string; and tokens back to text."""

from __future__ import annotations

from ..errors import InvalidRequest
from ..protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from .base import OpenAIServing
from .errors import engine_errors
from .tools import chat_turns


class ServingTokenize(OpenAIServing):
    async def create(self, req: TokenizeRequest) -> TokenizeResponse:
        self.ensure_ready()
        self.check_model(req.model)
        if req.messages is not None:
            ids = self.tokenize_chat(chat_turns(req.messages), req.add_generation_prompt)
        elif req.prompt is not None:
            ids = self.tokenize_text(req.prompt)
        else:
            raise InvalidRequest("Give either 'messages' or 'prompt'.", param="messages")
        strings = None
        if req.return_token_strs:
            with engine_errors():
                strings = self.engine.token_strings(ids)
        return TokenizeResponse(count=len(ids), max_model_len=self.max_model_len, tokens=ids, token_strs=strings)

    async def detokenize(self, req: DetokenizeRequest) -> DetokenizeResponse:
        self.ensure_ready()
        self.check_model(req.model)
        vocab = self.engine.info().vocab_size
        if any(t < 0 or (vocab is not None and t >= vocab) for t in req.tokens):
            raise InvalidRequest("tokens holds a token id outside the vocabulary.", param="tokens")
        with engine_errors():
            return DetokenizeResponse(prompt=self.engine.detokenize(req.tokens))
