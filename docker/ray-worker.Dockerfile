# syntax=docker/dockerfile:1
# The image of every Ray pod (head, CPU and GPU workers): the official Ray GPU image with CUDA
# torch and pdistill, so the campaign driver, Tune trials and Train workers import the same code.
# Build from the repository root (no Docker engine runs on the development machine):
#   docker build -f docker/ray-worker.Dockerfile -t REGISTRY/pdistill-ray:0.1.0-ray2.60.0-py311-gpu .
# RAY_VERSION must equal the ray pin in pyproject.toml (tests/deploy checks it).
ARG RAY_VERSION=2.60.0

FROM rayproject/ray:${RAY_VERSION}-py311-gpu
ARG RAY_VERSION
ARG TORCH_VERSION=2.13.0
# The PyTorch wheel index of a CUDA build (cu126, cu128, ...): it must be one that PyTorch
# publishes for TORCH_VERSION and that the GPU nodes' driver supports. The wheel brings its own
# CUDA runtime libraries, so it need not match the CUDA of the Ray image.
ARG TORCH_CUDA=cu128
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" "torch==${TORCH_VERSION}"
# The Ray image runs as its `ray` user (uid 1000, gid 100) with its own Python 3.11 environment.
COPY --chown=1000:100 pyproject.toml README.md /tmp/pdistill/
COPY --chown=1000:100 workers /tmp/pdistill/workers
COPY --chown=1000:100 orchestrator /tmp/pdistill/orchestrator
COPY --chown=1000:100 api /tmp/pdistill/api
# Installing pdistill must not move Ray or torch off the versions the cluster was built for.
RUN pip install /tmp/pdistill \
 && rm -rf /tmp/pdistill \
 && python -c "import sys, ray, torch; assert sys.version_info[:2] == (3, 11); assert ray.__version__ == '${RAY_VERSION}', ray.__version__; assert torch.__version__.startswith('${TORCH_VERSION}+${TORCH_CUDA}'), torch.__version__"
USER 1000:100
WORKDIR /home/ray
