"""Credentials: the admin bearer token, and the users' API keys or Supabase-issued JWTs.

Every comparison of a secret is constant-time. Every failure is a 401 with a short reason; nothing
about a bad credential can become a 500.
"""

from __future__ import annotations

import hmac
import logging
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.config import ApiSettings
from api.deps import ApiSettingsDep

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="ADMIN_TOKEN, an API key, or a Supabase JWT")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="one of API_KEYS")
JWT_ALGORITHMS = ("RS256", "ES256")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


async def require_admin(
    settings: ApiSettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = settings.admin_token
    if not expected or credentials is None or not _same(credentials.credentials, expected):
        raise _unauthorized("missing or wrong admin token")


async def require_user(
    request: Request,
    settings: ApiSettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> None:
    """Open when no users' credentials are configured; else an API key or a valid Supabase JWT."""
    if not settings.auth_enabled:
        return
    token = api_key or (credentials.credentials if credentials else None)
    if not token:
        raise _unauthorized("credentials required: X-API-Key or Authorization: Bearer")
    if any(_same(token, key) for key in settings.api_key_list()):
        return
    if settings.jwt_enabled and api_key is None:
        verify_jwt(token, settings)  # its claims are not used: a valid token is all a route needs
        return
    raise _unauthorized("invalid API key")


def verify_jwt(token: str, settings: ApiSettings) -> dict[str, Any]:
    """The token's claims, if Supabase signed it for our audience and it has not expired."""
    import jwt

    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
        if algorithm == "HS256" and settings.supabase_jwt_secret:
            key: Any = settings.supabase_jwt_secret
        elif algorithm in JWT_ALGORITHMS and (settings.supabase_jwks or settings.supabase_jwks_url):
            key = _signing_key(token, settings)
        else:
            raise jwt.InvalidAlgorithmError(f"tokens signed with {algorithm!r} are not accepted")
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=settings.jwt_audience,
            options={"require": ["exp", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None
    return claims


def _signing_key(token: str, settings: ApiSettings) -> Any:
    import jwt

    kid = jwt.get_unverified_header(token).get("kid")
    if settings.supabase_jwks:
        keys = _jwk_set(settings.supabase_jwks)
        matching = [k for k in keys.keys if k.key_id == kid] if kid else keys.keys[:1]
        if not matching:
            raise jwt.InvalidKeyError(f"no key {kid!r} in SUPABASE_JWKS")
        return matching[0].key
    return _jwk_client(settings.supabase_jwks_url or "").get_signing_key_from_jwt(token).key


@lru_cache(maxsize=4)
def _jwk_set(document: str) -> Any:
    import jwt

    return jwt.PyJWKSet.from_json(document)


@lru_cache(maxsize=4)
def _jwk_client(url: str) -> Any:
    import jwt

    return jwt.PyJWKClient(url, cache_keys=True, lifespan=3600, timeout=5)
