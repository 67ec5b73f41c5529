"""Which kinds this service offers: the registry filtered by the settings' switches."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from workers.config import BUILTIN_MODULES, DIAGNOSTIC_MODULE, KindSettings
from workers.errors import ConfigError, KindDisabledError, UnknownKindError
from workers.registry import KindSpec, all_kinds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalog:
    """Kinds by name. A disabled kind stays listed so that a request for it can name its switch
    (``disabled``: name -> the setting to change; ``why``: name -> the refusal, when not a switch)."""

    kinds: dict[str, KindSpec]
    disabled: dict[str, str]
    modules: tuple[str, ...]
    why: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> KindSpec:
        """The spec of an enabled kind, or UnknownKindError / KindDisabledError."""
        spec = self.kinds.get(name)
        if spec is None:
            raise UnknownKindError(name, self.enabled_names())
        if name in self.disabled:
            raise KindDisabledError(name, self.disabled[name], self.why.get(name))
        return spec

    def enabled_names(self) -> list[str]:
        return sorted(name for name in self.kinds if name not in self.disabled)


def load_catalog(settings: KindSettings) -> Catalog:
    """Import the kind modules the settings ask for and build the catalog.

    A built-in module whose optional dependencies are missing is skipped with a warning (its kinds are
    then unknown); a user module that cannot be imported is a configuration error.
    """
    modules = [m for m in BUILTIN_MODULES if _import_optional(m)]
    if settings.enable_diagnostic_tasks:
        importlib.import_module(DIAGNOSTIC_MODULE)
        modules.append(DIAGNOSTIC_MODULE)
    for name in settings.user_modules():
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"TASK_MODULES: cannot import {name!r}: {exc}") from exc
        modules.append(name)
    kinds = {n: s for n, s in all_kinds().items() if _from_any(s.module, modules)}
    switches = settings.disabled_switches()
    disabled = {n: s.switch for n, s in kinds.items() if s.switch in switches and s.switch}
    why: dict[str, str] = {}
    missing = settings.missing_settings()
    for name, spec in kinds.items():
        if name not in disabled and spec.switch in missing:
            disabled[name], reason = missing[spec.switch]
            why[name] = f"kind {name!r} {reason}"
    for name, spec in kinds.items():
        if spec.check is not None and name not in disabled:
            _check(name, spec.check)
    return Catalog(kinds=kinds, disabled=disabled, modules=tuple(modules), why=why)


def _check(name: str, check: Callable[[], object]) -> None:
    try:
        check()
    except ValidationError as exc:
        reasons = "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())
        raise ConfigError(f"kind {name!r}: {reasons}") from None
    except ValueError as exc:
        raise ConfigError(f"kind {name!r}: {exc}") from None


def _import_optional(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        log.warning("built-in kinds of %s are unavailable: %s", module, exc)
        return False
    return True


def _from_any(module: str, prefixes: list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)
