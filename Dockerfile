# njet-cert-manager as a sidecar next to NJet. Build: docker build -t njet-cert-manager .
# Run: docker run --network host -v /usr/local/njet:/usr/local/njet njet-cert-manager \
#        -p /usr/local/njet -c conf/cert-manager.toml
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
RUN pip install --no-cache-dir . && useradd --system --no-create-home njcm
# Binding :80/:443 for challenges and writing the NJet prefix usually needs root; drop to
# njcm with --user when your ports and prefix permissions allow it.
ENTRYPOINT ["njet-cert-manager"]
CMD ["-p", "/usr/local/njet", "-c", "conf/cert-manager.toml"]
