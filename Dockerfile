# The simlib demo app in a container: CPU TensorFlow, the app on 0.0.0.0:7860, a non-root user.
#
#   DOCKER_BUILDKIT=1 docker build -t simlib .
#   docker run -p 127.0.0.1:7860:7860 -v /path/to/gallery:/data:ro -v simlib-artifacts:/artifacts simlib
#
# The gallery is /data (mounted, or built in with --build-arg GALLERY=DIR, a folder inside the build context);
# the index cache is the /artifacts volume: the first start indexes the gallery, later starts load it.
# The login comes from $SIMLIB_AUTH or a secret file /run/secrets/simlib_auth, never from the image.
# Behind a TLS-intercepting proxy: --secret id=hostca,src=/path/to/ca-bundle.crt (used by pip, kept out of layers).
# More: docs/deploy.md.
ARG BASE=python:3.11-slim

# ---------------------------------------------------------------------------- the dependency list
# pyproject.toml also holds tool settings: only a change to [project].dependencies re-installs them below.
FROM ${BASE} AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt

# ---------------------------------------------------------------------------- dependencies (cached until that list changes)
FROM ${BASE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# The runtime dependencies only (no dev, no notebook extras).
RUN --mount=type=bind,from=requirements,source=/tmp/requirements.txt,target=/tmp/requirements.txt \
    --mount=type=secret,id=hostca,required=false \
    if [ -s /run/secrets/hostca ]; then export PIP_CERT=/run/secrets/hostca; fi \
 && python3 -m venv /opt/venv \
 && pip install -r /tmp/requirements.txt

# ---------------------------------------------------------------------------- simlib as a wheel (not in the final image)
FROM runtime AS wheel
COPY pyproject.toml README.md /src/
COPY simlib /src/simlib
RUN --mount=type=secret,id=hostca,required=false \
    if [ -s /run/secrets/hostca ]; then export PIP_CERT=/run/secrets/hostca; fi \
 && pip wheel --no-deps --wheel-dir /wheels /src

# ---------------------------------------------------------------------------- the app
FROM runtime
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps /wheels/simlib-*.whl \
 && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin simlib \
 && mkdir -p /artifacts /data \
 && chown simlib:simlib /artifacts
COPY docker/entrypoint.sh /usr/local/bin/simlib-entrypoint
COPY docker/healthcheck.py /usr/local/lib/simlib/healthcheck.py
COPY app_gradio.py /app/app_gradio.py
ARG GALLERY=docker/gallery
COPY ${GALLERY} /data/
# Keras' downloads (ImageNet weights) and simlib's caches live in the volume, so they survive a restart;
# Gradio's uploads stay in the container's /tmp.
ENV HOME=/home/simlib \
    KERAS_HOME=/artifacts/.keras \
    SIMLIB_CACHE=/artifacts/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    GRADIO_TEMP_DIR=/tmp/gradio \
    GRADIO_ANALYTICS_ENABLED=False \
    TF_CPP_MIN_LOG_LEVEL=2
USER simlib
WORKDIR /home/simlib
VOLUME ["/artifacts"]
EXPOSE 7860
# Indexing a large gallery on the first start can take minutes: failures count only after the start period.
HEALTHCHECK --interval=10s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "/usr/local/lib/simlib/healthcheck.py"]
# Python turns SIGINT into a clean stop (PID 1 gets no default SIGTERM handler).
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/simlib-entrypoint"]
CMD []
