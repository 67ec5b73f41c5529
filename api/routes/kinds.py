"""Convenience routes for the built-in kinds, and the list of kinds. Each creates an ordinary task.

Routes are built from the catalog, so their request bodies are the kinds' own input models (and so
documented in the OpenAPI schema); a kind whose module is missing has no route.
"""

# No ``from __future__ import annotations``: the endpoints below are made in a loop and FastAPI must
# see their body types as objects, not as names to resolve later.

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.auth import require_user
from api.deps import ApiSettingsDep, SupervisorDep
from api.errors import MemvisorRoute
from api.routes.tasks import REFUSALS, IdempotencyKey, WaitS
from api.submit import answer, submit_with_files
from supervisor.core import Submission
from workers.catalog import Catalog

JSON_ROUTES = {
    "rag.ingest": ("/v1/rag/ingest", "Ingest documents into a collection"),
    "rag.query": ("/v1/rag/query", "Query a collection: top-k documents with scores"),
    "rag.delete": ("/v1/rag/delete", "Delete documents, or a whole collection"),
    "agent": ("/v1/agent", "Ask the agent a question (retrieval, and an LLM when one is configured)"),
}
TimeoutS = Annotated[float | None, Query(gt=0, description="overrides the kind's timeout")]
CeilingMb = Annotated[float | None, Query(gt=0, description="overrides the kind's memory ceiling")]


def build_router(catalog: Catalog) -> APIRouter:
    router = APIRouter(route_class=MemvisorRoute, tags=["kinds"], dependencies=[Depends(require_user)])
    router.add_api_route("/v1/kinds", _kinds_endpoint(catalog), methods=["GET"], summary="Task kinds")
    for kind, (path, summary) in JSON_ROUTES.items():
        if kind in catalog.kinds:
            endpoint = _json_endpoint(kind, catalog.kinds[kind].input_model)
            router.add_api_route(
                path,
                endpoint,
                methods=["POST"],
                status_code=202,
                responses=REFUSALS,
                summary=summary,
                response_model=None,
            )
    if "ocr" in catalog.kinds:
        router.add_api_route(
            "/v1/ocr",
            _ocr,
            methods=["POST"],
            status_code=202,
            responses=REFUSALS,
            summary="Read the text of an uploaded image",
            response_model=None,
        )
    return router


def _json_endpoint(kind: str, model: type[BaseModel]) -> Any:
    async def endpoint(
        body: Annotated[model, Body()],  # type: ignore[valid-type]
        *,
        supervisor: SupervisorDep,
        settings: ApiSettingsDep,
        timeout_s: TimeoutS = None,
        ceiling_mb: CeilingMb = None,
        wait_s: WaitS = 0,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        payload = BaseModel.model_dump(body, mode="json", exclude_none=True)
        row = await supervisor.submit(
            Submission(kind, payload, timeout_s, ceiling_mb, idempotency_key=idempotency_key)
        )
        return await answer(supervisor, settings, row, wait_s)

    endpoint.__name__ = "submit_" + kind.replace(".", "_")
    return endpoint


async def _ocr(
    *,
    supervisor: SupervisorDep,
    settings: ApiSettingsDep,
    file: Annotated[UploadFile, File(description="a PNG, JPEG, GIF, BMP, TIFF or WebP image")],
    languages: Annotated[str, Form(max_length=100, description="comma-separated")] = "en",
    detail: Annotated[bool, Form(description="boxes and confidences per line")] = True,
    timeout_s: TimeoutS = None,
    ceiling_mb: CeilingMb = None,
    wait_s: WaitS = 0,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    payload = {"languages": [lang.strip() for lang in languages.split(",") if lang.strip()], "detail": detail}
    submission = Submission("ocr", payload, timeout_s, ceiling_mb, idempotency_key=idempotency_key)
    row = await submit_with_files(supervisor, settings, submission, [file], images_only=True)
    return await answer(supervisor, settings, row, wait_s)


def _kinds_endpoint(catalog: Catalog) -> Any:
    async def kinds(supervisor: SupervisorDep) -> list[dict[str, Any]]:
        return [
            {
                "name": spec.name,
                "description": spec.description,
                "enabled": name not in catalog.disabled,
                "switch": spec.switch,
                "estimate_mb": round(supervisor.estimate_mb(name), 1),
                "ceiling_mb": spec.ceiling_mb,
                "timeout_s": spec.timeout_s,
                "retriable": spec.retriable,
                "input_schema": spec.input_model.model_json_schema(),
            }
            for name, spec in sorted(catalog.kinds.items())
        ]

    return kinds
