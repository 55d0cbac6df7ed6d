# Concord gateway image: `docker build -t concord .` then
#   docker run -p 8080:8080 concord                      (the offline quickstart config)
#   docker run -p 8080:8080 -v $PWD/concord.yaml:/etc/concord/concord.yaml:ro concord
# The config directory is mounted whole in Kubernetes so ConfigMap updates hot-reload (SPEC §4).

# --- build: a wheel and its dependencies in a virtualenv, compilers never reach the final image
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/concord
COPY pyproject.toml README.md ./
COPY concord ./concord
RUN /opt/concord/bin/pip install --no-compile . \
    && /opt/concord/bin/python -m compileall -q /opt/concord/lib

# --- run
FROM python:3.11-slim
ENV PATH=/opt/concord/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONCORD_CONFIG=/etc/concord/concord.yaml
RUN groupadd --system --gid 10001 concord \
    && useradd --system --uid 10001 --gid concord --home-dir /var/lib/concord --no-create-home concord \
    && mkdir -p /etc/concord /var/lib/concord \
    && chown concord:concord /etc/concord /var/lib/concord  # quickstart's SQLite sits by its config
COPY --from=build /opt/concord /opt/concord
COPY --chown=concord:concord concord.yaml /etc/concord/concord.yaml
WORKDIR /var/lib/concord
USER 10001:10001
EXPOSE 8080
# /healthz is liveness; orchestrators should use /readyz for readiness (state and database).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["concord"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
