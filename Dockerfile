# The mllgraph services image (untested here: these machines have no Docker engine).
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mllgraph mllgraph
COPY services services
COPY cypher cypher
RUN pip install --no-cache-dir .
ENV MLLGRAPH_HOME=/data HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# The import folder of docker-compose.yml (MLLGRAPH_IMPORT_DIR); a new volume starts with it.
RUN mkdir -p /data/import
VOLUME /data
ENTRYPOINT ["mllgraph", "serve"]
