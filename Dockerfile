# shadowproxy as a sidecar: proxy on 8080, admin (/healthz, /readyz, /metrics, /api) on 9090.

# The compiled build (setup.py, SHADOWPROXY_COMPILE=1: about half the instructions per
# request) needs gcc and mypy, in pyproject's range (the one CI compiles with), and mypyc
# type-checks against the installed dependencies: install them, compile, then keep the
# exact wheels it was checked against. Only wheels reach the image.
FROM python:3.11 AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY shadowproxy ./shadowproxy
RUN pip install "setuptools>=68" wheel "mypy>=2.4,<2.5" types-PyYAML . \
 && pip uninstall -y shadowproxy \
 && SHADOWPROXY_COMPILE=1 pip wheel --no-build-isolation --no-deps --wheel-dir /wheels . \
 && pip freeze --exclude shadowproxy > /tmp/checked-against.txt \
 && pip wheel --wheel-dir /wheels -c /tmp/checked-against.txt /wheels/shadowproxy-*.whl

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY --from=build /wheels /wheels
COPY config ./config
RUN pip install --no-index --find-links /wheels shadowproxy \
 && rm -rf /wheels \
 && python -c "import shadowproxy, sys; sys.exit(0 if shadowproxy.compiled() else 'not the compiled build')" \
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
