"""The connector's model client minting its own short-lived tokens from the shared secret, against the real
inference server (small_inference accepts HS256 tokens signed with TEST_JWT_SECRET)."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest

from connector.core.model import ModelClient, TokenMinter
from connector.core.retry import RetryPolicy
from connector.skills.base import ModelError

from ...conftest import TEST_JWT_SECRET
from ...servers import ServerProcess

pytestmark = pytest.mark.slow


def client(url: str, http: httpx.AsyncClient, minter: TokenMinter | None, api_key: str = "unused") -> ModelClient:
    return ModelClient(url + "/v1", api_key, http, model=None, temperature=0, max_tokens=4, timeout_s=60,
                       connect_timeout_s=5, retry=RetryPolicy(attempts=1, factor=1.5, base_delay_s=0.1, max_delay_s=1, jitter=0),
                       minter=minter)


def test_minted_tokens_are_short_lived_and_renewed() -> None:
    minter = TokenMinter(TEST_JWT_SECRET, ttl_s=60)
    first = minter.token()
    claims = jwt.decode(first, TEST_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "connector" and claims["exp"] - claims["iat"] == 60
    assert minter.token() == first  # reused while most of its life is left
    minter._expires = time.time() + 10  # under a third left: a new one
    assert jwt.decode(minter.token(), TEST_JWT_SECRET, algorithms=["HS256"])["exp"] >= claims["exp"]


def test_chat_and_tokenize_with_minted_tokens(small_inference: ServerProcess) -> None:
    async def main() -> None:
        async with httpx.AsyncClient() as http:
            model = client(small_inference.url, http, TokenMinter(TEST_JWT_SECRET, ttl_s=120))
            text = "".join([d async for d in model.stream_chat([{"role": "user", "content": "Hi"}])])
            assert text
            assert await model.count_tokens([{"role": "user", "content": "Hi"}])
            wrong = client(small_inference.url, http, TokenMinter("another-secret-0123456789abcdef-xyz", ttl_s=120))
            with pytest.raises(ModelError, match="AuthenticationError|401"):
                async for _ in wrong.stream_chat([{"role": "user", "content": "Hi"}]):
                    pass

    asyncio.run(main())
