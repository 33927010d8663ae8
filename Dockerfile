# The classification service: onnxruntime + FastAPI, no torch. Build from the repository root:
#   docker build -t stn-signs-service .
#   docker build -t stn-signs-service:gpu --build-arg ONNXRUNTIME_PACKAGE="onnxruntime-gpu[cuda,cudnn]" .
# Run: docker run -p 8000:8000 stn-signs-service   (GPU: add --gpus all to the :gpu image)

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# onnxruntime (CPU) or onnxruntime-gpu[cuda,cudnn] (CUDA 12 libraries from PyPI); never both in one image.
ARG ONNXRUNTIME_PACKAGE=onnxruntime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY service ./service
# The service's dependencies from pyproject.toml, with onnxruntime swapped for the chosen package; then the
# project itself without dependencies (so the training extra, torch, never enters the image).
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(d for d in deps if not d.startswith('onnxruntime')))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt "${ONNXRUNTIME_PACKAGE}" \
 && pip install --no-deps . \
 && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="stn-signs-service" \
      org.opencontainers.image.description="Traffic-sign classification with spatial transformers (onnxruntime)"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVICE_MODELS_DIR=/app/models \
    SERVICE_HOST=0.0.0.0 \
    SERVICE_PORT=8000
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --home-dir /app app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# read-only for the app user: the models belong to root
COPY models /app/models
# numeric (the uid:gid of `app`), so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
