# The bot in a container. CPU (default):  docker build -t cervantes .
# NVIDIA GPU:  docker build --build-arg TF_VARIANT=gpu -t cervantes:gpu .   (run with --gpus all)
# The trained model must be in model/shipped/ first: it goes into the image as package data.

# --- builder: the wheel, with the TensorFlow distribution the variant needs ----------------------
FROM python:3.11-slim-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# cpu: tensorflow-cpu on amd64, tensorflow elsewhere; gpu: tensorflow[and-cuda] (docker/tensorflow.sh).
# TARGETARCH is set by BuildKit only; with the legacy builder the script asks dpkg.
ARG TF_VARIANT=cpu
ARG TARGETARCH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY docker/tensorflow.sh docker/
# the variant's TensorFlow into pyproject.toml; its dependency list alone in /deps, so that the runtime
# stage installs them in a layer of their own, kept while only the code changes
RUN tf=$(sh docker/tensorflow.sh "$TF_VARIANT" "$TARGETARCH") \
    && echo "TensorFlow: $tf" \
    && sed -i "s/\"tensorflow>=/\"$tf>=/" pyproject.toml \
    && grep -qF "\"$tf>=" pyproject.toml \
    && mkdir /deps \
    && python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
        >/deps/requirements.txt
COPY bot bot
COPY cli cli
COPY config config
COPY model model
COPY service service
COPY storage storage
RUN test -f model/shipped/model.weights.h5 \
        || { echo "model/shipped/ has no model.weights.h5: put the trained model there first" >&2; exit 1; } \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
    && python -m zipfile -l /dist/cervantes-*.whl | grep "model/shipped/model.weights.h5"

# --- runtime: the wheel and its dependencies at the versions in docker/constraints.txt -------------
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    CERVANTES_STORAGE_PATH=/data/cervantes.db
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin cervantes \
    && mkdir /data \
    && chown cervantes:cervantes /data
# the dependencies at the pinned versions (docker/lock.sh writes them: `make lock`; one they lack still
# installs, unpinned), then the wheel: a change to the code alone rebuilds from here
COPY docker/constraints.txt /tmp/constraints.txt
COPY --from=builder /deps/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --constraint /tmp/constraints.txt --requirement /tmp/requirements.txt
COPY --from=builder /dist/ /tmp/dist/
RUN pip install --no-cache-dir --constraint /tmp/constraints.txt /tmp/dist/cervantes-*.whl \
    && rm -rf /tmp/dist /tmp/constraints.txt /tmp/requirements.txt
WORKDIR /home/cervantes
USER 10001:10001
# the database (and its -wal, -shm and .status.json files) lives here: mount a volume
VOLUME ["/data"]
# 8443: Telegram's webhook mode only. Metrics are off unless CERVANTES_METRICS_PORT is set.
EXPOSE 8443
# reads the status file serve keeps beside the database (about 0.2 s, 25 MiB); it appears once the
# model is loaded and the adapters have started, hence the start period
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 CMD ["cervantes", "health"]
CMD ["cervantes", "serve"]
