"""Who may call the OpenAI API: named API keys (stored hashed) and short-lived HS256 JWTs.

Two kinds of credentials, both sent as ``Authorization: Bearer <credential>``:

- **Named API keys.** A TOML file (``api_keys_file``) maps each key's name to the SHA-256 of the key
  (``connector = "sha256:9f86d0..."``), so a leaked configuration does not leak keys; the legacy single
  ``api_key`` setting is the key named ``default``. Keys are long random strings (``python -m inference.tokens
  new-key``), so a plain digest is enough (no salt or slow hash is needed against guessing 256 random bits).
- **JWTs** signed HS256 with ``jwt_secret`` (the seeds' choice), verified by PyJWT: ``exp`` required, a
  lifetime (``exp`` minus ``iat``, or ``nbf``, or now) of at most ``jwt_max_lifetime_s``, ``nbf`` / ``iat``
  honoured with ``jwt_leeway_s`` of clock skew, any other algorithm (``none``, RS256, ...) refused before the
  signature is looked at, and an optional ``scope`` claim (space-separated: ``generate`` for chat, completions
  and tokenize; ``read`` for the model list; absent: both).

Each failure is an ``AuthFailure`` with a reason (a metric label) and a message that says what was wrong
without echoing the credential. A success is a ``Principal`` whose name (``key:connector``, ``jwt:<sub>``)
goes into the request log and the per-principal metric.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt

ALGORITHM = "HS256"
SCOPES = ("generate", "read")
HASH_PREFIX = "sha256:"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str  # "key:<name>" or "jwt:<sub>"
    scopes: frozenset[str] = frozenset(SCOPES)


class AuthFailure(Exception):
    """A credential refused: `reason` is a short label (missing, unknown_key, expired, not_yet_valid,
    bad_signature, bad_algorithm, too_long_lived, malformed, scope)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def key_digest(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def load_key_file(path: Path) -> dict[str, str]:
    """{name: "sha256:<hex>"} from a TOML file of `name = "sha256:..."` lines (under [keys] or at the top)."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the API key file {path}: {exc}") from exc
    table = data.get("keys", data)
    keys: dict[str, str] = {}
    for name, digest in table.items():
        if not isinstance(digest, str) or not digest.startswith(HASH_PREFIX) or \
                len(digest) != len(HASH_PREFIX) + 64:
            raise ValueError(f"API key file {path}: {name!r} must be \"sha256:<64 hex digits>\" "
                             "(python -m inference.tokens new-key writes it)")
        keys[str(name)] = digest.lower()
    return keys


@dataclass(frozen=True)
class Authenticator:
    """Checks one bearer credential. Empty (no keys, no secret): the API is open."""

    keys: Mapping[str, str]  # name -> "sha256:<hex>"
    jwt_secret: str | None = None
    max_lifetime_s: int = 3600
    leeway_s: int = 30

    @property
    def enabled(self) -> bool:
        return bool(self.keys) or bool(self.jwt_secret)

    def authenticate(self, credential: str | None) -> Principal:
        if not credential:
            raise AuthFailure("missing", "Missing credential: send 'Authorization: Bearer <API key or token>'.")
        if credential.count(".") == 2 and self.jwt_secret:
            return self._token(credential)
        digest = key_digest(credential)
        for name, known in self.keys.items():
            if hmac.compare_digest(digest, known):
                return Principal(f"key:{name}")
        if credential.count(".") == 2:
            raise AuthFailure("bad_signature", "Tokens are not accepted by this server (no jwt_secret set).")
        raise AuthFailure("unknown_key", "Unknown API key.")

    def _token(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise AuthFailure("malformed", "Malformed token.") from exc
        if header.get("alg") != ALGORITHM:
            raise AuthFailure("bad_algorithm", f"Token algorithm {str(header.get('alg'))[:16]!r} is not allowed: "
                                               f"only {ALGORITHM}.")
        assert self.jwt_secret is not None
        try:
            claims = jwt.decode(token, self.jwt_secret, algorithms=[ALGORITHM], leeway=self.leeway_s,
                                options={"require": ["exp"], "verify_aud": False})
        except jwt.ExpiredSignatureError as exc:
            raise AuthFailure("expired", "Token expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthFailure("not_yet_valid", "Token not yet valid (nbf / iat in the future).") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthFailure("bad_signature", "Token signature does not verify.") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthFailure("malformed", f"Token lacks the required claim {exc.claim!r}.") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthFailure("malformed", f"Invalid token ({type(exc).__name__}).") from exc
        now = time.time()
        start = claims.get("iat", claims.get("nbf"))
        if isinstance(start, (int, float)) and start > now + self.leeway_s:
            raise AuthFailure("not_yet_valid", "Token not yet valid (issued in the future).")
        start = start if isinstance(start, (int, float)) else now
        if claims["exp"] - start > self.max_lifetime_s + self.leeway_s:
            raise AuthFailure("too_long_lived", f"Token lifetime exceeds the maximum of {self.max_lifetime_s} s.")
        scope = claims.get("scope")
        scopes = frozenset(SCOPES) if scope is None else frozenset(str(scope).split()) & frozenset(SCOPES)
        subject = str(claims.get("sub") or "anonymous")[:64]
        return Principal(f"jwt:{subject}", scopes)


def issue_token(secret: str, *, subject: str, ttl_s: int, scope: str | None = None,
                now: float | None = None) -> str:
    """An HS256 token for `subject`, valid for `ttl_s` seconds from now (iat, nbf, exp set)."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {"sub": subject, "iat": issued, "nbf": issued, "exp": issued + ttl_s}
    if scope:
        claims["scope"] = scope
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def required_scope(path: str) -> str:
    """The scope a route needs: reading the model list, or generating (everything else under the API)."""
    return "read" if path.rstrip("/").endswith("/models") or "/models/" in path else "generate"
