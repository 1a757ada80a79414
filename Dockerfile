# syntax=docker/dockerfile:1
# Two stages: build tools and pip stay in the first; the runtime image holds the venv and nothing
# else writable. Runs as UID 10001 with a read-only root filesystem (writes only under /tmp).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
# Compile now: at run time the root filesystem is read-only and .pyc files could not be written.
RUN pip install . && python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="skill-webhook" \
      org.opencontainers.image.description="Kubernetes admission webhooks that mount AI-agent skills (OCI images) into agent pods" \
      org.opencontainers.image.source="https://github.com/kagenti/skill-webhook" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 skill-webhook \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin skill-webhook
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The sample AgentRuntimes make `docker run` of the image work with the embedded file source.
COPY manifests/samples ./manifests/samples
# Outside a cluster with no TLS files, serve makes a dev CA: /tmp is the one writable place.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SKILL_WEBHOOK_CERTS_DIR=/tmp/skill-webhook-certs
USER 10001:10001
EXPOSE 8443 8080
ENTRYPOINT ["skill-webhook"]
CMD ["serve"]
