# shadowproxy as a sidecar: proxy on 8080, admin (/healthz, /readyz, /metrics, /api) on 9090.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shadowproxy ./shadowproxy
COPY config ./config
RUN pip install . \
 && useradd --system --uid 10001 --home /var/lib/shadowproxy --create-home shadowproxy \
 && mkdir -p /etc/shadowproxy \
 && cp config/example.yaml /etc/shadowproxy/config.yaml

USER shadowproxy
WORKDIR /var/lib/shadowproxy
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["shadowproxy"]
CMD ["run", "-c", "/etc/shadowproxy/config.yaml"]
