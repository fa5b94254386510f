# syntax=docker/dockerfile:1
# Multi-stage build: compile the wheel (and its C extension) in a builder with a
# toolchain, install it into a slim runtime image that runs as a non-root user.

FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ktproxy ./ktproxy
COPY ext ./ext
# CI=true: a failed extension build fails the image build instead of falling back.
RUN CI=true pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 ktproxy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY examples/policy-config.yaml /etc/ktproxy/policy-config.yaml
USER ktproxy
WORKDIR /home/ktproxy
EXPOSE 41002
ENV PYTHONUNBUFFERED=1
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:41002/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["kt", "gateway", "run"]
CMD ["--policy-config", "/etc/ktproxy/policy-config.yaml", "--host", "0.0.0.0", "--port", "41002"]
