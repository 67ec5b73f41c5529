"""The task-kind registry: what a kind is, and the decorator that declares one.

Kind modules are imported by the API process (to validate payloads against the input model) and by
workers (to run the function). They must therefore import their heavy libraries inside the function,
never at module level: the API process stays small.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from workers.errors import UnknownKindError

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class TaskContext:
    """What a running task may use besides its payload.

    Files written to ``output_dir`` are listed in the task's result (``files``) once it succeeds, and
    served at ``GET /v1/tasks/{id}/files/{name}`` (plain names: letters, digits, ``.``, ``_``, ``-``).
    """

    task_id: str
    data_dir: Path
    spool_dir: Path
    send_progress: ProgressFn = field(repr=False)
    output: InitVar[Path | None] = None  # default: DATA_DIR/outputs/<task_id>, as the supervisor makes it
    output_dir: Path = field(init=False)

    def __post_init__(self, output: Path | None) -> None:
        self.output_dir = output if output is not None else self.data_dir / "outputs" / self.task_id

    def progress(self, message: str, **fields: Any) -> None:
        """Stream a progress event (a short message plus JSON-able fields) to the supervisor."""
        self.send_progress({"message": message, **fields})


TaskFn = Callable[[Any, TaskContext], dict[str, Any]]
# What a kind's workers may read beyond code and system files, given the data directory (e.g. models).
PathsFn = Callable[[Path], Iterable[Path]]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class KindSpec:
    """A registered task kind. Memory figures are in MB, times in seconds."""

    name: str
    fn: TaskFn
    input_model: type[BaseModel]
    estimate_mb: float
    ceiling_mb: float
    timeout_s: float
    retriable: bool
    switch: str | None
    module: str
    description: str
    check: Callable[[], object] | None = None
    secrets: tuple[str, ...] = ()
    network: bool | Callable[[], bool] = False
    stores: tuple[str, ...] = ()
    reads: PathsFn | None = None
    data_limit: bool = True
    data_slack_mb: float | None = None

    def needs_network(self) -> bool:
        """Evaluated by the supervisor once, with the service's settings."""
        return bool(self.network()) if callable(self.network) else self.network


_KINDS: dict[str, KindSpec] = {}


def task_kind(
    name: str,
    *,
    input_model: type[BaseModel],
    estimate_mb: float,
    ceiling_mb: float,
    timeout_s: float = 60.0,
    retriable: bool = False,
    switch: str | None = None,
    check: Callable[[], object] | None = None,
    secrets: tuple[str, ...] = (),
    network: bool | Callable[[], bool] = False,
    stores: tuple[str, ...] = (),
    reads: PathsFn | None = None,
    data_limit: bool = True,
    data_slack_mb: float | None = None,
) -> Callable[[TaskFn], TaskFn]:
    """Declare a task kind.

    ``estimate_mb`` is the expected peak of the worker's whole process tree (the admission controller
    starts from it and then learns from observed peaks); ``ceiling_mb`` is where the worker is killed.
    ``switch`` names the setting that disables the kind (e.g. ``DISABLE_OCR``). ``check`` is called
    at startup when the kind is enabled (e.g. to validate its own settings): a ValueError it raises
    stops the service with its message, instead of failing the kind's first task.

    What its workers may reach (see the README's security model): ``secrets`` names the environment
    variables of the service its task receives (no other worker sees them); ``network`` says whether
    it needs the network (or a callable deciding from the settings); ``stores`` are directories under
    DATA_DIR it writes (e.g. ``"chroma"``); ``reads`` gives further paths it reads (e.g. its models).
    ``data_limit=False`` exempts its workers from RLIMIT_DATA: for programs that reserve large writable
    mappings and cannot start under a limit near their ceiling (Chromium, Node.js); their tree stays
    bounded by the watchdog and by admission. ``data_slack_mb`` replaces ``DATA_LIMIT_SLACK_MB`` for a
    kind whose workers map writable memory they never touch (ONNX Runtime's buffers, thread stacks):
    measure its VmData peak against its RSS peak.
    """
    if not 0 < estimate_mb <= ceiling_mb:
        raise ValueError(f"kind {name}: need 0 < estimate_mb <= ceiling_mb")
    if timeout_s <= 0:
        raise ValueError(f"kind {name}: timeout_s must be positive")
    for secret in secrets:
        if not _ENV_NAME.match(secret):
            raise ValueError(f"kind {name}: secret {secret!r} is not an environment variable name")
    for store in stores:
        if Path(store).is_absolute() or ".." in Path(store).parts or not store.strip("/."):
            raise ValueError(f"kind {name}: store {store!r} must be a relative path inside DATA_DIR")

    def register(fn: TaskFn) -> TaskFn:
        _KINDS[name] = KindSpec(
            name=name,
            fn=fn,
            input_model=input_model,
            estimate_mb=float(estimate_mb),
            ceiling_mb=float(ceiling_mb),
            timeout_s=float(timeout_s),
            retriable=retriable,
            switch=switch,
            module=fn.__module__,
            description=(fn.__doc__ or "").strip().split("\n")[0],
            check=check,
            secrets=tuple(secrets),
            network=network,
            stores=tuple(stores),
            reads=reads,
            data_limit=data_limit,
            data_slack_mb=data_slack_mb,
        )
        return fn

    return register


def get_kind(name: str) -> KindSpec:
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownKindError(name, sorted(_KINDS)) from None


def all_kinds() -> dict[str, KindSpec]:
    return dict(_KINDS)
