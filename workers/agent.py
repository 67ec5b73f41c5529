"""The ``agent`` task kind: a LangGraph graph that answers a question from retrieved passages.

Graph (one router decides every edge from what the state already holds):

    START -> [read_attachment] -> [retrieve] -> llm | quote -> END
                                               llm failed -> quote

- ``read_attachment`` (when ``file`` is given): the OCR kind's function, called in-process through the
  registry (``workers.ocr`` is imported only here); its text becomes a passage ``file:<name>``.
- ``retrieve`` (when ``collection`` is given): :func:`workers.rag.query_collection`, in-process.
- ``llm`` (when ``LLM_BASE_URL`` is set, see :mod:`workers.agent_config`): one chat-completions call
  with the passages, numbered by id, in the prompt.
- ``quote``: the deterministic answer, quoting the passages and naming their ids as sources.

LLM failures (timeout, connection error, HTTP error status, malformed JSON or completion) do not fail
the task: the graph falls back to ``quote``, the failed step is recorded as ``llm_failed`` in
``steps`` and the reason is returned as ``llm_error``. A grounded answer is still useful, and the
failure stays visible to the caller and in the task's progress events.

Result: ``{answer, sources: [passage ids], steps: [node names in order]}`` (+ ``llm_error`` after a
fallback). Every step is streamed as a progress event ``step`` with ``node=<name>``.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workers.agent_config import AgentSettings
from workers.errors import LLMError, TaskInputError, UnknownKindError
from workers.names import is_plain_name
from workers.rag import query_collection
from workers.rag_models import CollectionName, RagQuery
from workers.rag_store import STORES, needs_network
from workers.registry import TaskContext, get_kind, task_kind

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4_000
MAX_FILE_NAME_CHARS = 255
DEFAULT_K = 4
MAX_K = 20
QUOTE_PASSAGES = 3
QUOTE_CHARS = 400
# Quoting a passage far weaker than the best one adds noise, not grounding.
QUOTE_MIN_RELATIVE_SCORE = 0.5
MAX_ATTACHMENT_CHARS = 4_000
END_NODE = "__end__"

SYSTEM_PROMPT = (
    "You answer questions using only the passages given. Cite the passages you use by their id in "
    "square brackets, e.g. [doc-1]. If the passages do not contain the answer, say so."
)


class AgentInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    collection: CollectionName | None = None
    file: str | None = Field(default=None, max_length=MAX_FILE_NAME_CHARS)
    k: int = Field(default=DEFAULT_K, ge=1, le=MAX_K)

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, question: str) -> str:
        if not question.strip():
            raise ValueError("question must not be empty or whitespace")
        return question

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, name: str | None) -> str | None:
        # A name inside the task's spool directory (workers/names.py), never a path that could leave it.
        if name is not None and not is_plain_name(name):
            raise ValueError("file must be a plain file name inside the task's spool directory")
        return name


class AgentState(TypedDict, total=False):
    question: str
    collection: str | None
    file: str | None
    k: int
    passages: list[dict[str, Any]]
    attachment_read: bool
    answer: str
    sources: list[str]
    llm_error: str


def llm_configured() -> bool:
    """An LLM endpoint is configured: the agent's workers need the network. Settings that do not
    validate get none: the task fails on them before it would reach anything."""
    try:
        return AgentSettings().llm_configured
    except ValueError:
        return False


def _ocr_models(data_dir: Path) -> list[Path]:
    try:
        from workers.ocr.settings import model_dir
    except ImportError:
        return []
    return [model_dir(data_dir)]


# ---------------------------------------------------------------------------------------------------
# Tools: the other kinds' functions, called in-process.


def read_attachment_text(file: str, ctx: TaskContext) -> str:
    """OCR text of an attached image, through the ``ocr`` kind's own function."""
    if not (ctx.spool_dir / file).is_file():
        raise TaskInputError(f"attached file {file!r} is not in the task's spool directory")
    try:
        importlib.import_module("workers.ocr")
        spec = get_kind("ocr")
    except (ImportError, UnknownKindError) as exc:
        raise TaskInputError("OCR is not available") from exc
    result = spec.fn(spec.input_model.model_validate({"file": file}), ctx)
    return str(result.get("text", ""))


def retrieve_passages(question: str, collection: str, k: int, ctx: TaskContext) -> list[dict[str, Any]]:
    matches = query_collection(RagQuery(collection=collection, query=question, k=k), ctx)
    return [{"id": m["id"], "text": m["text"], "score": m["score"]} for m in matches]


# ---------------------------------------------------------------------------------------------------
# The LLM call.


def _prompt(question: str, passages: list[dict[str, Any]]) -> list[dict[str, str]]:
    context = "\n\n".join(f"[{p['id']}] {p['text']}" for p in passages) or "(no passages)"
    user = f"Passages:\n{context}\n\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _completion_text(data: Any) -> str:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMError(
            "LLM endpoint returned a malformed completion (no choices[0].message.content)"
        ) from exc
    if not isinstance(content, str) or not content.strip():
        raise LLMError("LLM endpoint returned an empty completion")
    return content.strip()


def chat_completion(settings: AgentSettings, messages: list[dict[str, str]]) -> str:
    """One chat-completions request; every failure becomes an LLMError with a clear message."""
    import httpx

    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
    body = {
        "model": settings.model,
        "messages": messages,
        "temperature": 0,
        "max_tokens": settings.max_tokens,
    }
    try:
        with httpx.Client(timeout=settings.timeout_s) as client:
            response = client.post(settings.completions_url(), json=body, headers=headers)
        response.raise_for_status()
        data = response.json()
    except httpx.TimeoutException as exc:
        raise LLMError(f"LLM request timed out ({settings.timeout_s:g} s)") from exc
    except httpx.HTTPStatusError as exc:
        raise LLMError(f"LLM endpoint answered HTTP {exc.response.status_code}") from exc
    except httpx.HTTPError as exc:
        raise LLMError(f"LLM request failed: {type(exc).__name__}: {exc}") from exc
    except ValueError as exc:
        raise LLMError("LLM endpoint returned invalid JSON") from exc
    return _completion_text(data)


def _cited(answer: str, passages: list[dict[str, Any]]) -> list[str]:
    ids = [p["id"] for p in passages]
    cited = [i for i in ids if re.search(rf"\[{re.escape(i)}\]", answer)]
    return cited or ids


# ---------------------------------------------------------------------------------------------------
# The deterministic answer.


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= QUOTE_CHARS else flat[: QUOTE_CHARS - 1].rstrip() + "…"


def _relevant(passages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Passages scoring at least QUOTE_MIN_RELATIVE_SCORE of the best; unscored ones (OCR) always."""
    scores = [p["score"] for p in passages if p["score"] is not None]
    floor = max(scores) * QUOTE_MIN_RELATIVE_SCORE if scores and max(scores) > 0 else float("-inf")
    return [p for p in passages if p["score"] is None or p["score"] >= floor]


def quote_answer(
    question: str, passages: list[dict[str, Any]], llm_error: str | None
) -> tuple[str, list[str]]:
    """Quote the best passages, best first, each under its id; no model involved."""
    lead = (
        "No language model is configured" if llm_error is None else f"The language model failed ({llm_error})"
    )
    if not passages:
        return f"{lead}, and no passages were found for: {question}", []
    quoted = _relevant(passages)[:QUOTE_PASSAGES]
    lines = [f"[{p['id']}] {_excerpt(p['text'])}" for p in quoted]
    answer = f"{lead}; the most relevant passages are:\n" + "\n".join(lines)
    return answer, [p["id"] for p in quoted]


# ---------------------------------------------------------------------------------------------------
# The graph.


def _route(settings: AgentSettings) -> Callable[[AgentState], str]:
    def route(state: AgentState) -> str:
        if state.get("file") and not state.get("attachment_read"):
            return "read_attachment"
        if state.get("collection") and "passages" not in state:
            return "retrieve"
        if "answer" in state:
            return END_NODE
        if settings.llm_configured and "llm_error" not in state:
            return "llm"
        return "quote"

    return route


def _nodes(ctx: TaskContext, settings: AgentSettings) -> dict[str, Callable[[AgentState], dict[str, Any]]]:
    def read_attachment(state: AgentState) -> dict[str, Any]:
        file = state.get("file") or ""
        text = read_attachment_text(file, ctx)[:MAX_ATTACHMENT_CHARS]
        passage = {"id": f"file:{file}", "text": text, "score": None}
        return {"attachment_read": True, "passages": [*state.get("passages", []), passage]}

    def retrieve(state: AgentState) -> dict[str, Any]:
        found = retrieve_passages(
            state["question"], state.get("collection") or "", state.get("k", DEFAULT_K), ctx
        )
        return {"passages": [*state.get("passages", []), *found]}

    def llm(state: AgentState) -> dict[str, Any]:
        passages = state.get("passages", [])
        try:
            answer = chat_completion(settings, _prompt(state["question"], passages))
        except LLMError as exc:
            logger.warning("task %s: %s; falling back to quoting", ctx.task_id, exc)
            return {"llm_error": str(exc)}
        return {"answer": answer, "sources": _cited(answer, passages)}

    def quote(state: AgentState) -> dict[str, Any]:
        answer, sources = quote_answer(state["question"], state.get("passages", []), state.get("llm_error"))
        return {"answer": answer, "sources": sources}

    return {"read_attachment": read_attachment, "retrieve": retrieve, "llm": llm, "quote": quote}


def build_graph(ctx: TaskContext, settings: AgentSettings) -> Any:
    """The compiled StateGraph; langgraph is imported here, never at module import."""
    from langgraph.graph import START, StateGraph

    graph = StateGraph(AgentState)
    nodes = _nodes(ctx, settings)
    for name, fn in nodes.items():
        graph.add_node(name, fn)  # type: ignore[call-overload]
    route = _route(settings)
    destinations = [*nodes, END_NODE]
    graph.add_conditional_edges(START, route, destinations)
    for name in nodes:
        graph.add_conditional_edges(name, route, destinations)
    return graph.compile()


def _step_name(node: str, update: dict[str, Any]) -> str:
    return "llm_failed" if node == "llm" and "llm_error" in update else node


def _step_fields(update: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "passages" in update:
        fields["passages"] = [p["id"] for p in update["passages"]]
    if "sources" in update:
        fields["sources"] = update["sources"]
    if "llm_error" in update:
        fields["error"] = update["llm_error"]
    return fields


def run_agent(payload: AgentInput, ctx: TaskContext, settings: AgentSettings) -> dict[str, Any]:
    graph = build_graph(ctx, settings)
    state: dict[str, Any] = dict(payload.model_dump())
    steps: list[str] = []
    for chunk in graph.stream(state, stream_mode="updates"):
        for node, raw_update in chunk.items():
            update = raw_update or {}
            state.update(update)
            steps.append(_step_name(node, update))
            ctx.progress("step", node=steps[-1], **_step_fields(update))
    result = {"answer": state["answer"], "sources": state.get("sources", []), "steps": steps}
    if "llm_error" in state:
        result["llm_error"] = state["llm_error"]
    return result


@task_kind(
    "agent",
    input_model=AgentInput,
    estimate_mb=200,
    ceiling_mb=300,
    timeout_s=180,
    retriable=True,
    switch="DISABLE_AGENTS",
    check=AgentSettings,  # the LLM_* settings, checked when the service starts
    secrets=("LLM_API_KEY",),  # sent with each agent task; never in the zygote's environment
    network=lambda: llm_configured() or needs_network(),
    stores=STORES,  # retrieval opens the store, which may write (see workers/rag.py)
    reads=_ocr_models,  # an attachment goes through the OCR kind
    data_slack_mb=256,  # and so does its memory: see the OCR kind's declaration
)
def agent(payload: AgentInput, ctx: TaskContext) -> dict[str, Any]:
    """Answer a question from a collection's passages (and an attached image's text), with sources."""
    try:
        settings = AgentSettings()
    except ValueError as exc:
        raise TaskInputError(f"the LLM settings are invalid: {exc}") from exc
    result = run_agent(payload, ctx, settings)
    logger.info("task %s: agent answered after %s", ctx.task_id, " -> ".join(result["steps"]))
    return result
