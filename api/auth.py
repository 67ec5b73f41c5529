"""Bearer-token check for the admin routes (constant-time comparison)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import ApiSettingsDep

_bearer = HTTPBearer(auto_error=False, description="ADMIN_TOKEN")


def require_admin(
    settings: ApiSettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = settings.admin_token
    given = credentials.credentials if credentials else ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong admin token",
            headers={"WWW-Authenticate": "Bearer"},
        )
