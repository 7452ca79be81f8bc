# syntax=docker/dockerfile:1.7
# Multi-stage build of the two stockops images, both running as a non-root user:
#   docker build --target operator -t stockops-operator .   (kopf operator, no TensorFlow)
#   docker build --target workload -t stockops-workload .   (feed, sink, train, deploy, serve)
# Dependencies come from the committed uv.lock, so images match what CI tested.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS uv
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_FROZEN=1

FROM uv AS source
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY model/pyproject.toml model/pyproject.toml
COPY operator/pyproject.toml operator/pyproject.toml
COPY model/src model/src
COPY operator/src operator/src

FROM source AS operator-build
RUN uv venv /opt/venv \
 && VIRTUAL_ENV=/opt/venv uv sync --active --no-dev --package stockops-operator --no-editable

FROM source AS workload-build
RUN uv venv /opt/venv \
 && VIRTUAL_ENV=/opt/venv uv sync --active --no-dev --package stockops-model --extra ml --no-editable

FROM ${PYTHON_IMAGE} AS runtime-base
RUN groupadd --system --gid 10001 stockops \
 && useradd --system --uid 10001 --gid stockops --home-dir /home/stockops --create-home stockops
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /home/stockops

FROM runtime-base AS operator
COPY --from=operator-build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080 9090
# The same entry point as the chart: namespace, peering priority and liveness from STOCKOPS_*.
ENTRYPOINT ["python", "-m", "stockops_operator"]

FROM runtime-base AS workload
COPY --from=workload-build /opt/venv /opt/venv
ENV MPLBACKEND=Agg TF_CPP_MIN_LOG_LEVEL=2 KERAS_HOME=/tmp/keras MPLCONFIGDIR=/tmp/mpl
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["stockops"]
CMD ["--help"]
