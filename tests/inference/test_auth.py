"""Credentials on the OpenAI API: named keys stored hashed, HS256 tokens verified by PyJWT, and each attack
the issue names refused with a 401 that says what was wrong without echoing the credential."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from inference.app import create_app
from inference.auth import AuthFailure, Authenticator, issue_token, key_digest, load_key_file
from inference.settings import InferenceSettings

from .fakes import FakeEngine, NoGpu

SECRET = "a-shared-secret-of-32-characters!"
KEY = "sk-named-key-for-tests-0123456789"
ROOT = Path(__file__).resolve().parents[2]


def auth(**kw: object) -> Authenticator:
    return Authenticator({"connector": key_digest(KEY)}, SECRET, **kw)  # type: ignore[arg-type]


def reason(credential: str, authenticator: Authenticator | None = None) -> str:
    with pytest.raises(AuthFailure) as caught:
        (authenticator or auth()).authenticate(credential)
    assert not credential or credential not in caught.value.message
    return caught.value.reason


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_named_key_and_a_fresh_token_pass() -> None:
    assert auth().authenticate(KEY).name == "key:connector"
    principal = auth().authenticate(issue_token(SECRET, subject="connector", ttl_s=300))
    assert principal.name == "jwt:connector" and principal.scopes == {"generate", "read"}


def test_the_attacks() -> None:
    now = time.time()
    assert reason(issue_token(SECRET, subject="x", ttl_s=60, now=now - 3600)) == "expired"
    future = jwt.encode({"sub": "x", "nbf": int(now + 600), "iat": int(now), "exp": int(now + 900)}, SECRET)
    assert reason(future) == "not_yet_valid"
    issued_later = jwt.encode({"sub": "x", "iat": int(now + 600), "exp": int(now + 900)}, SECRET)
    assert reason(issued_later) == "not_yet_valid"
    unsigned = b64({"alg": "none", "typ": "JWT"}) + "." + b64({"sub": "x", "exp": int(now + 60)}) + "."
    assert reason(unsigned) == "bad_algorithm"
    rs256 = b64({"alg": "RS256", "typ": "JWT"}) + "." + b64({"sub": "x", "exp": int(now + 60)}) + ".c2ln"
    assert reason(rs256) == "bad_algorithm"
    header, payload, signature = issue_token(SECRET, subject="reader", ttl_s=60, scope="read").split(".")
    tampered = ".".join((header, b64({"sub": "admin", "exp": int(now + 60), "iat": int(now)}), signature))
    assert reason(tampered) == "bad_signature"
    assert reason(issue_token("another-secret-of-32-characters!!", subject="x", ttl_s=60)) == "bad_signature"
    assert reason(issue_token(SECRET, subject="x", ttl_s=7 * 86400)) == "too_long_lived"
    assert reason(jwt.encode({"sub": "x", "iat": int(now)}, SECRET)) == "malformed"  # no exp
    assert reason("not.a.token") == "malformed"
    assert reason("sk-wrong") == "unknown_key"
    assert reason("") == "missing"


def test_clock_skew_within_the_leeway_is_allowed() -> None:
    now = time.time()
    slightly_ahead = jwt.encode({"sub": "x", "nbf": int(now + 10), "iat": int(now + 10), "exp": int(now + 300)},
                                SECRET)
    assert auth(leeway_s=30).authenticate(slightly_ahead).name == "jwt:x"
    just_expired = issue_token(SECRET, subject="x", ttl_s=60, now=now - 70)
    assert auth(leeway_s=30).authenticate(just_expired).name == "jwt:x"
    assert reason(just_expired, auth(leeway_s=0)) == "expired"


def test_scope_claim_limits_the_routes() -> None:
    assert auth().authenticate(issue_token(SECRET, subject="x", ttl_s=60, scope="read")).scopes == {"read"}


def test_key_file_holds_hashes_only(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    out = subprocess.run([sys.executable, "-m", "inference.tokens", "new-key", "--name", "connector", "--file",
                          str(path)], capture_output=True, text=True, cwd=ROOT, check=True)
    key = out.stdout.strip()
    assert key.startswith("sk-") and key not in path.read_text() and "connector" in path.read_text()
    assert load_key_file(path) == {"connector": key_digest(key)}
    assert path.stat().st_mode & 0o077 == 0
    again = subprocess.run([sys.executable, "-m", "inference.tokens", "new-key", "--name", "connector", "--file",
                            str(path)], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode != 0 and "exists" in again.stderr
    (tmp_path / "bad.toml").write_text('connector = "plaintext-key"\n')
    with pytest.raises(ValueError, match="sha256"):
        load_key_file(tmp_path / "bad.toml")


def test_tokens_issue_prints_a_token_the_server_accepts() -> None:
    env = {"INFERENCE_JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "inference.tokens", "issue", "--sub", "connector", "--ttl", "600"],
                         capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert auth().authenticate(out.stdout.strip()).name == "jwt:connector"
    too_long = subprocess.run([sys.executable, "-m", "inference.tokens", "issue", "--sub", "x", "--ttl", "86400"],
                              capture_output=True, text=True, cwd=ROOT, env=env)
    assert too_long.returncode != 0 and "jwt_max_lifetime_s" in too_long.stderr
    assert SECRET not in too_long.stderr


def _client(**settings: object) -> httpx.AsyncClient:
    app = create_app(InferenceSettings(served_model_name="fake-model", warmup=False, **settings), FakeEngine(),
                     gpus=NoGpu())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_the_server_answers_each_failure_in_the_openai_envelope(tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys]\nconnector = "{key_digest(KEY)}"\n')
    async with _client(api_keys_file=keys, jwt_secret=SECRET) as client:
        expired = issue_token(SECRET, subject="x", ttl_s=60, now=time.time() - 3600)
        r = await client.get("/v1/models", headers={"Authorization": f"Bearer {expired}"})
        body = r.json()["error"]
        assert r.status_code == 401 and body["type"] == "authentication_error" and "expired" in body["message"]
        assert expired not in r.text
        assert (await client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})).status_code == 200
        reader = issue_token(SECRET, subject="dash", ttl_s=60, scope="read")
        assert (await client.get("/v1/models", headers={"Authorization": f"Bearer {reader}"})).status_code == 200
        r = await client.post("/v1/completions", json={"prompt": "x"}, headers={"Authorization": f"Bearer {reader}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
        metrics = (await client.get("/metrics")).text
        assert 'llm_auth_failures_total{reason="expired"} 1.0' in metrics
        assert 'llm_requests_by_principal_total{principal="key:connector"} 1.0' in metrics
        assert 'llm_auth_failures_total{reason="scope"} 1.0' in metrics
