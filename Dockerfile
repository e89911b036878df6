# salespulse: one image for both production roles.
#   docker run ... salespulse-image worker --host 0.0.0.0 --port 8080   (the default command: worker)
#   docker run ... salespulse-image ingest --host 0.0.0.0 --port 8080
# Configuration comes from SALESPULSE_* environment variables (README, "Configuration").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Dependencies first, exactly as locked (versions and hashes; docs/operations.md says how to regenerate the lock):
# the core only, no development broker (the "embedded" extra is not in the lock).
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
# pyproject.toml names README.md as the package readme, so it is part of the build input.
COPY pyproject.toml README.md ./
COPY salespulse ./salespulse
RUN pip install --no-deps . \
    && pip check \
    && rm -rf /src

# Non-root; SALESPULSE_DATA_DIR (Faust's table dir) is the only place the process writes.
RUN groupadd --system --gid 10001 salespulse \
    && useradd --system --uid 10001 --gid salespulse --home-dir /var/lib/salespulse --shell /usr/sbin/nologin salespulse \
    && mkdir -p /var/lib/salespulse \
    && chown salespulse:salespulse /var/lib/salespulse
ENV SALESPULSE_DATA_DIR=/var/lib/salespulse
WORKDIR /var/lib/salespulse
USER salespulse:salespulse

# Webhooks (ingest), /healthz, /readyz and /metrics (every role). Listen on 0.0.0.0 in a container
# (--host 0.0.0.0 or SALESPULSE_HTTP_HOST); the default 127.0.0.1 is unreachable from outside.
EXPOSE 8080

# Liveness on /healthz; slim has no curl, so Python asks. Follows SALESPULSE_HTTP_PORT when set.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SALESPULSE_HTTP_PORT', '8080'), timeout=2)"]

ENTRYPOINT ["salespulse"]
CMD ["worker"]
