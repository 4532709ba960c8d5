# A stand-in for the official Milvus image, for `make test-docker` only (no registry to pull milvusdb/milvus from):
# PyPI's embedded Milvus standalone (package `milvus`, the server `make test-milvus` runs), built from the local
# base image. It keeps etcd and its storage inside; tests/support/compose.milvus-standin.yaml runs it as the
# `milvus` service of compose.yaml's "milvus" profile.
ARG BASE=python:3.11-slim
FROM ${BASE}
RUN --mount=type=secret,id=hostca,required=false \
    if [ -s /run/secrets/hostca ]; then export PIP_CERT=/run/secrets/hostca; fi \
 && python3 -m venv /opt/milvus \
 && /opt/milvus/bin/pip install --no-cache-dir --disable-pip-version-check "milvus>=2.3.5,<2.4"
ENV PATH=/opt/milvus/bin:$PATH
EXPOSE 19530
CMD ["milvus-server", "--data", "/var/lib/milvus", "--proxy-port", "19530"]
