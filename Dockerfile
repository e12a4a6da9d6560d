# pandapush as a container image.
#
#   docker build -t pandapush .
#   docker run -p 3000:3000 -e AUTH_METHOD=basic -e ADMIN_USERNAME=admin \
#       -e ADMIN_PASSWORD=password -v pandapush-data:/data pandapush
#
# then the console is at http://localhost:3000/admin and Bayeux at /push.
# docs/deployment.md has the rest (environment, compose, systemd, nginx).
#
# BASE_IMAGE: any Debian-like image with python3 (>= 3.11) and its venv module.
# The test suite builds from a base made of Debian's own packages with mmdebstrap
# (tests/test_deploy_image.py); users get the official Python image.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- builder: a virtualenv with pandapush and its dependencies ------------------------
FROM ${BASE_IMAGE} AS builder

# A package index other than PyPI (a mirror, a proxy), for this stage only:
#   docker build --build-arg PIP_INDEX_URL=https://pypi.internal/simple .
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# /opt/pandapush is the same path in the runtime stage: a venv's scripts name
# their interpreter by absolute path.
# setuptools as pyproject.toml's [build-system] wants it: the code's own layer
# below is built without build isolation (no second download of the backend).
# A pip that reads Metadata-Version 2.4 (what that setuptools writes): Debian 12's
# pip 23.0 installs such a package without its dependencies.
RUN python3 -m venv /opt/pandapush \
    && /opt/pandapush/bin/pip install --upgrade "pip>=24.1" "setuptools>=77" wheel

WORKDIR /src

# The dependencies first, in a layer of their own: it is rebuilt only when the
# packaging metadata changes, not on every change of the code. (A placeholder
# package, with the __version__ pyproject.toml reads, stands in for the code so
# that the project can be installed, then goes.)
COPY pyproject.toml README.md LICENSE ./
RUN mkdir -p pandapush twisted/plugins \
    && echo '__version__ = "0"' > pandapush/__init__.py \
    && /opt/pandapush/bin/pip install ".[oidc]" \
    && /opt/pandapush/bin/pip uninstall --yes pandapush \
    && rm -rf build pandapush twisted *.egg-info

COPY pandapush ./pandapush
COPY twisted ./twisted
# Then Twisted's plugin cache, written now because /opt is read-only at run time.
# Twisted rewrites a dropin.cache that is not strictly newer than every plugin
# module, and image layers keep whole seconds, so the modules are dated back first
# (and recompiled, as their .pyc files record that date).
RUN /opt/pandapush/bin/pip install --no-deps --no-build-isolation . \
    && plugins="$(/opt/pandapush/bin/python -c 'import os, twisted.plugins as p; print(os.path.dirname(p.__file__))')" \
    && find "$plugins" -name '*.py' -exec touch -d 2000-01-01T00:00:00Z {} + \
    && /opt/pandapush/bin/python -m compileall -q "$plugins" \
    && /opt/pandapush/bin/twistd pandapush --help >/dev/null

# --- runtime: the venv, a user of its own, a data volume ------------------------------
FROM ${BASE_IMAGE}

# Shown by /health_check.json ("rev", "built"); pass e.g. the git commit.
ARG PANDAPUSH_REV=unknown
ARG PANDAPUSH_BUILT=unknown

LABEL org.opencontainers.image.title="pandapush" \
      org.opencontainers.image.description="Multi-tenant publish/subscribe server for the web, speaking Bayeux (Faye/CometD)" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.revision="${PANDAPUSH_REV}"

# A fixed numeric id, so that a volume's owner is the same on every host and an
# orchestrator can check runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 pandapush \
    && useradd --no-log-init --uid 10001 --gid pandapush --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin pandapush \
    && install -d -o 10001 -g 10001 -m 0750 /data

COPY --from=builder /opt/pandapush /opt/pandapush
COPY deploy/docker/healthcheck.py /opt/pandapush/bin/pandapush-healthcheck

# PORT: where the server listens (all interfaces) unless --listen says otherwise.
# DATABASE_PATH and PANDAPUSH_DATA_DIR put everything the server writes (the SQLite
# database, with a generated admin password's hash) in the /data volume, never in the image.
ENV PATH=/opt/pandapush/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=3000 \
    DATABASE_PATH=/data/db.sqlite \
    PANDAPUSH_DATA_DIR=/data \
    PANDAPUSH_REV=${PANDAPUSH_REV} \
    PANDAPUSH_BUILT=${PANDAPUSH_BUILT}

WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 3000

# Liveness (GET /live): the process answers HTTP. Redis and database outages do not
# fail it on purpose: no restart cures them. Readiness is GET /ready
# (`pandapush-healthcheck ready`, what docker-compose.yml's nodes use).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["pandapush-healthcheck"]

# --nodaemon: the container's main process; --pidfile=: no twistd.pid (nothing
# reads it, and a stale one would refuse the next start). Options go after
# "pandapush", e.g. `docker run <image> twistd -n --pidfile= pandapush --workers 0`;
# `docker run <image> pandapush migrate` runs the management command instead.
CMD ["twistd", "--nodaemon", "--pidfile=", "pandapush"]
