# forecaster: the API, the scheduler, the workers and the one-shot commands in one image.
#
#   docker build -t forecaster .                       CPU torch (the default)
#   docker build -t forecaster:cuda \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .   CUDA torch
#
#   docker run -p 8000:8000 forecaster                 `forecaster up` on the bundled example
#   docker run forecaster scheduler                    any command: the entrypoint is `forecaster`
#   docker run -e FORECASTER_DATABASE_URL=postgresql+psycopg://... forecaster worker   a worker anywhere
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first and from PyTorch's own index: this layer survives code changes, and
# `pip install .` below finds torch already satisfied instead of pulling PyPI's
# (CUDA-bundling, several GB) wheel.
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY forecaster ./forecaster
COPY api ./api
COPY jobs ./jobs
COPY migrations ./migrations
RUN pip install . \
 && python -c "import torch, forecaster, api, jobs, migrations; print('torch', torch.__version__)"

# The example config with its bundled offline snapshots: `docker run` works with
# no network and no mount. docker-compose mounts ./forecaster.toml over it.
COPY forecaster.toml /etc/forecaster/forecaster.toml
ENV FORECASTER_CONFIG=/etc/forecaster/forecaster.toml

# Not root. /data is the working directory, where the default SQLite file lives.
RUN useradd --create-home --uid 10001 --user-group forecaster \
 && mkdir /data && chown forecaster:forecaster /data \
 && rm -rf /src
USER forecaster
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000

ENTRYPOINT ["forecaster"]
CMD ["up", "--host", "0.0.0.0", "--port", "8000"]
