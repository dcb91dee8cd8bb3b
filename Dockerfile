# syntax=docker/dockerfile:1
# facestream images. Two targets:
#   docker build --target cpu -t facestream:cpu .   # ONNX Runtime on the CPU, Debian 12 base
#   docker build --target gpu -t facestream:gpu .   # TensorRT on NVIDIA's TensorRT container
# Models are converted (and TensorRT plans compiled: they are specific to the GPU) at first
# start into the /data volume; nothing is downloaded at run time. No secret is baked in: the
# API token comes from FACESTREAM_API_TOKEN and the service refuses to start without it.
# System packages come from deploy/system-packages.txt only (tests/test_deploy.py checks it).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
# NVIDIA's release 25.01 ships TensorRT 10.8, CUDA 12.8 and Python 3.12 on Ubuntu 24.04
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:25.01-py3

# ---- CPU: runtime libraries shared by the build and final stages ----
FROM ${PYTHON_IMAGE} AS cpu-runtime
COPY deploy/system-packages.txt deploy/system-packages.sh /opt/facestream/
# the [runtime] and [image] groups of deploy/system-packages.txt (the one package list)
RUN bash /opt/facestream/system-packages.sh runtime image \
 && rm -rf /var/lib/apt/lists/*

# ---- CPU: build the virtual environment ----
FROM cpu-runtime AS cpu-build
RUN bash /opt/facestream/system-packages.sh build \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engines ./engines
COPY pipeline ./pipeline
COPY calibration ./calibration
# a plain install: the BlazeFace and MiniFASNet ONNX files ship inside the package
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir ".[cpu,gstreamer]"

# ---- CPU: the final image ----
FROM cpu-runtime AS cpu
COPY --from=cpu-build /opt/venv /opt/venv
COPY deploy/facestream.docker.toml /etc/facestream/facestream.toml
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin facestream \
 && mkdir -p /data /samples && chown facestream /data /samples
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--", "facestream"]
CMD ["run", "--config", "/etc/facestream/facestream.toml", "--host", "0.0.0.0", "--port", "8080", "--token-required"]

# ---- GPU: TensorRT + CUDA from NVIDIA's container, ONNX Runtime GPU ----
FROM ${TENSORRT_IMAGE} AS gpu
COPY deploy/system-packages.txt deploy/system-packages.sh /opt/facestream/
RUN bash /opt/facestream/system-packages.sh runtime build gpu-image \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engines ./engines
COPY pipeline ./pipeline
COPY calibration ./calibration
# --system-site-packages: the container's own tensorrt Python bindings stay visible
RUN python3 -m venv --system-site-packages /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir ".[gpu,gstreamer]" \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin facestream \
 && mkdir -p /data /samples && chown facestream /data /samples
COPY deploy/facestream.gpu.toml /etc/facestream/facestream.toml
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=300s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--", "facestream"]
CMD ["run", "--config", "/etc/facestream/facestream.toml", "--host", "0.0.0.0", "--port", "8080", "--token-required"]
