#!/bin/sh
# docker/tensorflow.sh VARIANT [ARCH]: the TensorFlow distribution the image installs, on stdout.
#   cpu on amd64: tensorflow-cpu (a much smaller download; it has x86-64 wheels only)
#   cpu elsewhere: tensorflow (on arm64 it is CPU-only anyway)
#   gpu: tensorflow[and-cuda] (the CUDA libraries from PyPI)
# ARCH is Docker's TARGETARCH. The legacy builder (DOCKER_BUILDKIT=0) leaves it empty: then the
# architecture of the image being built, as its dpkg says.
set -eu
variant=${1:-}
arch=${2:-}
[ -n "$arch" ] || arch=$(dpkg --print-architecture)
case "$variant" in
  cpu) if [ "$arch" = amd64 ]; then echo tensorflow-cpu; else echo tensorflow; fi ;;
  gpu) echo "tensorflow[and-cuda]" ;;
  *) echo "TF_VARIANT must be cpu or gpu, not '$variant'" >&2; exit 1 ;;
esac
