"""Kinds registered through TASK_MODULES by the tests, as a user's own module would."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from workers.registry import TaskContext, task_kind


class EchoInput(BaseModel):
    text: str = Field(max_length=1000)
    file: str | None = None


@task_kind("sample.echo", input_model=EchoInput, estimate_mb=40, ceiling_mb=128, timeout_s=30)
def echo(payload: EchoInput, ctx: TaskContext) -> dict[str, Any]:
    """Echo the text, and the size of the attached file if there is one."""
    ctx.progress("echoing", chars=len(payload.text))
    size = (ctx.spool_dir / payload.file).stat().st_size if payload.file else None
    return {"text": payload.text, "file_bytes": size}


class WriteInput(BaseModel):
    name: str = Field(pattern=r"^[a-z]+\.txt$")
    text: str = Field(max_length=1000)
    repeat: int = Field(default=1, ge=1, le=100_000)


@task_kind("sample.write", input_model=WriteInput, estimate_mb=40, ceiling_mb=128, timeout_s=30)
def write(payload: WriteInput, ctx: TaskContext) -> dict[str, Any]:
    """Write the text, ``repeat`` times, into an output file of the task."""
    (ctx.output_dir / payload.name).write_text(payload.text * payload.repeat)
    return {"written": payload.name}


@task_kind("sample.switched", input_model=EchoInput, estimate_mb=40, ceiling_mb=128, switch="DISABLE_OCR")
def switched(payload: EchoInput, ctx: TaskContext) -> dict[str, Any]:
    """A kind behind the DISABLE_OCR switch, to test switches without the OCR models."""
    return {"text": payload.text}
