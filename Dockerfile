# njet-cert-manager as a sidecar next to NJet (deploy/compose.yaml runs the pair).
#
#   docker build -t njet-cert-manager .
#   docker run -d --network host -v /usr/local/njet:/usr/local/njet njet-cert-manager
#
# Volumes: /usr/local/njet is NJet's prefix, shared with NJet: the controller reads
# conf/njet.conf (and its includes) and conf/cert-manager.toml, writes only .lego/ (the store:
# certificates, keys 0600, status, events, quarantine) and reaches NJet's embedded MQTT broker
# on data/mosquitto.sock. Run it in NJet's network namespace (--network host, or compose's
# network_mode: service:njet): NJet's API (apiAddress, default http://127.0.0.1:8081), its
# stream route to our tls-alpn-01 server and its proxy to our http-01 server are on loopback.
#
# User: it runs as njcm (uid 10001), which must own .lego/ on the volume:
#   install -d -o 10001 -g 10001 -m 0700 /usr/local/njet/.lego   # or chown -R 10001:10001 it
# That is enough when NJet owns ports 80 and 443 (http-01 through NJet with
# proxyHttpChallengeServerIp, tls-alpn-01 through NJet's stream on e.g. ":10443"). When the
# controller's own challenge server binds :80 or :443 (the defaults httpChallengeServerAddress
# ":80", tlsChallengeServerAddress ":443"), binding them needs root or CAP_NET_BIND_SERVICE:
#   docker run --user root ...        (compose: user: root)
# The container's health is GET /healthz on the admin API (200 ok, 503 degraded or stopping);
# set NJCM_HEALTHZ_URL when [admin] address is not 127.0.0.1:2000.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
RUN pip install --no-cache-dir . \
    && rm -rf /src \
    && groupadd --system --gid 10001 njcm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin njcm
WORKDIR /

ENV NJCM_HEALTHZ_URL=http://127.0.0.1:2000/healthz
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\ntry:\n    r = urllib.request.urlopen(os.environ['NJCM_HEALTHZ_URL'], timeout=5)\nexcept Exception as exc:\n    sys.exit(f'unhealthy: {exc}')\nsys.exit(0 if r.status == 200 else 1)"]

VOLUME ["/usr/local/njet"]
USER njcm
STOPSIGNAL SIGTERM
ENTRYPOINT ["njet-cert-manager"]
CMD ["-p", "/usr/local/njet/", "-c", "conf/cert-manager.toml"]
