# banatie: `banatie serve` by default (SQLite and objects in the /app/data volume).
# The same image runs `banatie origin` and `banatie edge`; see docker-compose.yml.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY banatie ./banatie
COPY cache ./cache
COPY edge ./edge
COPY origin ./origin
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=3000
RUN useradd --system --create-home --uid 10001 --user-group banatie
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Created and owned before VOLUME, so a new volume starts out writable by the user.
RUN mkdir -p /app/data && chown banatie:banatie /app/data
USER banatie
VOLUME ["/app/data"]
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('PORT') or '3000'), timeout=3)"]
CMD ["banatie", "serve"]
