# syntax=docker/dockerfile:1
# The control-plane image: `pdistill serve` (HTTP API and dashboard) and the `pdistill` CLI.
# deploy/ also runs the MLflow tracking server from it (`mlflow server`, same pinned MLflow).
# Build from the repository root (no Docker engine runs on the development machine):
#   docker build -f docker/api.Dockerfile -t REGISTRY/pdistill-api:0.1.0-py311 .
ARG PYTHON_VERSION=3.11.14

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The CPU wheel, from PyTorch's CPU index: the control plane never trains, and the default
# torch wheel is a multi-GB CUDA build. pyproject's torch==2.13.0 then accepts 2.13.0+cpu.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY workers /src/workers
COPY orchestrator /src/orchestrator
COPY api /src/api
RUN pip install /src \
 && python -c "import sys, torch; assert sys.version_info[:2] == (3, 11); assert torch.__version__.startswith('${TORCH_VERSION}+cpu'), torch.__version__"

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG PDISTILL_UID=10001
RUN groupadd --system --gid "${PDISTILL_UID}" pdistill \
 && useradd --system --uid "${PDISTILL_UID}" --gid pdistill --create-home --home-dir /home/pdistill pdistill
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/pdistill/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PDISTILL_API_HOST=0.0.0.0 \
    PDISTILL_API_PORT=8000
USER ${PDISTILL_UID}:${PDISTILL_UID}
WORKDIR /home/pdistill
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/pdistill/healthcheck.py"]
ENTRYPOINT ["pdistill"]
CMD ["serve"]
