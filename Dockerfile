# voicedrop in a container: the daemon as a non-root user, the spool and the models as volumes.
#
# Users: the default base is a slim Python, and torch comes from PyPI, which on x86_64 is a
# CUDA build (its CUDA libraries are wheels; the host needs only the NVIDIA driver and the
# NVIDIA container toolkit). The offline espeak engine works without a GPU.
#   docker build -t voicedrop .            docker compose up   (see docker-compose.yml)
# CI builds the same file on a Debian bookworm root file system it bootstraps itself, with
# torch's CPU wheel (see tests/system/test_container.py).
ARG BASE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE}

# what to install: torch (a requirement, or a wheel put in wheels/), voicedrop's extras
# (all: every engine; empty: the core, espeak and the HTTP API), and pip's options
# (CI: "--no-index", everything from wheels/)
ARG TORCH=torch==2.13.0
ARG EXTRAS=all
ARG PIP_OPTIONS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    VOICEDROP_CONFIG=/etc/voicedrop/config.toml \
    VOICEDROP_SPOOL=/spool \
    VOICEDROP_STATE_DIR=/var/lib/voicedrop \
    VOICEDROP_LOG_FORMAT=json \
    NUMBA_CACHE_DIR=/var/lib/voicedrop/numba \
    PATH=/opt/voicedrop/venv/bin:$PATH

WORKDIR /opt/voicedrop/src
COPY wheels/ /opt/voicedrop/wheels/
COPY pyproject.toml README.md ./
COPY requirements/ requirements/
COPY voicedrop/ voicedrop/
RUN python3 -m venv /opt/voicedrop/venv \
 && pip install ${PIP_OPTIONS} --find-links /opt/voicedrop/wheels "${TORCH}" \
 && pip install ${PIP_OPTIONS} --find-links /opt/voicedrop/wheels \
      -c requirements/constraints.txt ".${EXTRAS:+[${EXTRAS}]}" \
 && if pip show coqui-tts >/dev/null 2>&1; then \
      pip install ${PIP_OPTIONS} --find-links /opt/voicedrop/wheels --no-deps \
        -r requirements/rvc-nodeps.txt \
      && python requirements/drop_torchaudio_extension.py; \
    fi \
 && rm -rf /opt/voicedrop/wheels /root/.cache

COPY deploy/container-config.toml /etc/voicedrop/config.toml
RUN groupadd --system --gid 10001 voicedrop \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/voicedrop \
      --shell /usr/sbin/nologin voicedrop \
 && mkdir -p /spool /models /var/lib/voicedrop \
 && chown voicedrop:voicedrop /spool /var/lib/voicedrop
VOLUME ["/spool", "/models", "/var/lib/voicedrop"]
USER voicedrop
WORKDIR /var/lib/voicedrop
EXPOSE 8000
# healthy while the daemon runs and its heartbeat (state/status.json) is recent; the
# compose file checks the HTTP API's /health where a service serves it
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["voicedrop", "status", "--health"]
ENTRYPOINT ["voicedrop"]
CMD ["run"]
