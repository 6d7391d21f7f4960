# Herd image for compose.yaml. GPU hosts: build from a CUDA devel image and pass
#   --build-arg BASE=nvidia/cuda:12.6.3-devel-ubuntu24.04 --build-arg CMAKE_ARGS="-DGGML_CUDA=on"
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG CMAKE_ARGS=""
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential cmake git python3 python3-venv python3-dev make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/herd
COPY pyproject.toml Makefile README.md ./
COPY scripts ./scripts
COPY gateway ./gateway
COPY worker ./worker
COPY protocol ./protocol
COPY cli ./cli
RUN CMAKE_ARGS="${CMAKE_ARGS}" make install
ENV PATH=/opt/herd/.venv/bin:$PATH \
    OLLAMA_HOST=0.0.0.0:11434 \
    OLLAMA_MODELS=/models
EXPOSE 11434 11435
CMD ["herd", "serve"]
