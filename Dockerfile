# syntax=docker/dockerfile:1
# Sentinel container: CPU torch by default, CUDA with a build argument.
#
#   docker build -t sentinel .                                   # CPU (default)
#   docker build -t sentinel:cuda --build-arg TORCH_VARIANT=cu126 .   # CUDA 12.6 wheels
#
# Runs as a non-root user (uid 10001); checkpoints and the alert outbox live on the
# volume /var/lib/sentinel; the healthcheck asks /-/ready (sources connected and
# checkpoint loaded). Config: /etc/sentinel/sentinel.yaml (mount your own there).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
# cpu | cu118 | cu121 | cu124 | cu126 ...: the PyTorch wheel index variant.
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/sentinel
ENV PATH=/opt/sentinel/bin:$PATH
# torch first, from the variant's index, so the generic install below never pulls another build.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY sentinel ./sentinel
RUN pip install -c constraints.txt . && sentinel --help >/dev/null

FROM python:${PYTHON_VERSION}-slim
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="sentinel" \
      org.opencontainers.image.description="Streaming anomaly detection for sensor fleets" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.sentinel.torch-variant="${TORCH_VARIANT}"
RUN groupadd --system --gid 10001 sentinel \
 && useradd --system --uid 10001 --gid sentinel --home-dir /var/lib/sentinel --shell /usr/sbin/nologin sentinel \
 && install -d -o sentinel -g sentinel -m 0750 /var/lib/sentinel \
 && install -d -m 0755 /etc/sentinel
COPY --from=build /opt/sentinel /opt/sentinel
COPY config/ /etc/sentinel/examples/
COPY deploy/docker/sentinel.yaml /etc/sentinel/sentinel.yaml
ENV PATH=/opt/sentinel/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OMP_WAIT_POLICY=PASSIVE \
    SENTINEL_HEALTH_URL=http://127.0.0.1:9680/-/ready
USER 10001:10001
WORKDIR /var/lib/sentinel
VOLUME ["/var/lib/sentinel"]
EXPOSE 9680
# Warm-up (history + first training) can take minutes: start-period covers it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5m --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['SENTINEL_HEALTH_URL'], timeout=4).status == 200 else 1)"]
ENTRYPOINT ["sentinel"]
CMD ["run", "--config", "/etc/sentinel/sentinel.yaml"]
