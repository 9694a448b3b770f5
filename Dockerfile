# syntax=docker/dockerfile:1
# The Cogwork operator image: `cogwork operator` (Kopf) with the report endpoint and /metrics.
#
#   docker build -t ghcr.io/cogwork/operator:0.1.0 .
#
# The operator needs no torch: only the control-plane dependencies are installed, pinned to the
# versions in pyproject.toml (tests/unit/test_dockerfiles.py keeps the two in step).
# Pin the base by digest when publishing (python:3.11.13-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install \
        kopf==1.45.2 \
        kubernetes==36.0.3 \
        torchx==0.7.0 \
        pydantic==2.14.3 \
        pyyaml==6.0.4 \
        prometheus-client==0.26.0 \
        numpy==2.4.6 \
        scipy==1.17.1 \
        cryptography==50.0.2 \
        optuna==5.0.0 \
        cmaes==0.13.1 \
        kubeflow-katib-api==0.19.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer-image/cogwork_trainer ./trainer-image/cogwork_trainer
COPY sdk/cogwork_sdk ./sdk/cogwork_sdk
# --no-deps: everything the operator imports is pinned above; torch stays out of this image.
RUN pip install --no-deps . \
 && python -c "import cogwork.controllers.operator, cogwork.cli"

FROM ${PYTHON_IMAGE}
# Non-root with a fixed uid, matching the chart's podSecurityContext (runAsUser 65532).
RUN groupadd --gid 65532 cogwork \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin cogwork
COPY --from=build /opt/venv /opt/venv
# Read-only root filesystem: no bytecode writes, HOME and temp files on the /tmp emptyDir.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8443 8080 8081
ENTRYPOINT ["cogwork"]
CMD ["operator"]
