"""POST /tokenize: the token count of a chat or a prompt, and the context window, for clients that trim."""

from __future__ import annotations

from ..errors import InvalidRequest
from ..protocol import TokenizeRequest, TokenizeResponse
from .base import OpenAIServing
from .chat import chat_turns


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
        return TokenizeResponse(count=len(ids), max_model_len=self.max_model_len,
                                tokens=ids if req.return_tokens else None)
