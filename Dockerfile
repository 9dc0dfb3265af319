# syntax=docker/dockerfile:1
# The gencluster runtime image: what every ClusteredServer pod runs (`gencluster run`).
# Users build their own image FROM this one and install the module their `spec.server` names.
#
#   docker build -t ghcr.io/gencluster/gencluster:0.1.0 .

# The base image: an official Python image by default (the release pipeline), or any image
# with python3.11, pip and venv on PATH (`make images` builds local/python:3.11 with
# debootstrap, for machines without a registry: see .ci/python-base.Containerfile).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY operator operator
COPY devcluster devcluster
COPY examples examples
# Wheels for the package and every dependency, so the final stage needs no compiler or cache.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# The root filesystem is read-only in the pods: no bytecode files written at import.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# BuildKit (the docker default) bind-mounts the wheels: they never land in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels gencluster
# A numeric, non-root user (`runAsNonRoot` can only verify numeric ones), with a passwd
# entry: getpass.getuser(), which kopf names itself by, fails without one.
RUN groupadd --gid 65532 gencluster \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin gencluster
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["gencluster"]
CMD ["run"]
