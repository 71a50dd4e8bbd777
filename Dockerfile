# ingest: one image for the edge, the workers and the migrate job.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system ingest && useradd --system --gid ingest --home-dir /app ingest
WORKDIR /app

COPY pyproject.toml README.md constraints.txt ./
COPY ingest ./ingest
COPY worker ./worker
# constraints.txt pins every dependency: the same versions on every build.
RUN pip install --constraint constraints.txt . && rm -rf /root/.cache

USER ingest
ENV INGEST_HOST=0.0.0.0 INGEST_PORT=8080
EXPOSE 8080
CMD ["ingest", "serve"]
