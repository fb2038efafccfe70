# Switchboard worker image. `docker compose up` runs it beside a single-node Kafka broker.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY switchboard ./switchboard
COPY cli ./cli
COPY streams ./streams
COPY transports ./transports
COPY schemas ./schemas
COPY config ./config
RUN pip install --no-cache-dir -c constraints.txt . \
 && useradd --system --home /var/lib/switchboard switchboard \
 && mkdir -p /var/lib/switchboard && chown switchboard /var/lib/switchboard
USER switchboard
ENV SWITCHBOARD_DATA_DIR=/var/lib/switchboard/data \
    SWITCHBOARD_WEB_HOST=0.0.0.0 \
    SWITCHBOARD_WEB_PORT=6066
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:6066/healthz', timeout=2).status != 200)"
ENTRYPOINT ["switchboard"]
CMD ["worker"]
