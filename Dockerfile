# stackgan2 serve on the CPU, as a non-root user:
#   docker build -t stackgan2 .
#   docker run --rm -p 8000:8000 stackgan2        # then open http://127.0.0.1:8000/
# Another model: mount it and pass it on, e.g. -v "$PWD/exported:/model:ro" stackgan2 stackgan2 serve --host 0.0.0.0 --model /model
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# CPU-only torch wheels (no CUDA libraries): PyTorch's CPU index. Where only PyPI is reachable,
# build with --build-arg TORCH_INDEX=https://pypi.org/simple (the same torch, with CUDA libraries).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX" torch==2.14.1 torchvision==0.29.1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY stackgan2 stackgan2
COPY cli cli
COPY assets assets
RUN pip install ".[serve]" \
    && useradd --create-home --uid 10001 stackgan2

USER stackgan2
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["stackgan2", "serve", "--host", "0.0.0.0", "--port", "8000"]
