# The diffai GitHub Action: `diffai` and its entry point on a slim Python, without torch
# (diffai reads .pt files with its own allow-list unpickler; torch is an optional extra).
# ONNX needs nothing more to compare: diffai parses it itself (onnx is not in the image).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Install from a throw-away copy of the source, so the entry point runs the installed
# package (templates and schemas as package data), exactly as `pip install diffai` would.
# The gguf extra (llama.cpp's own package, 1.4 MB; its numpy, pyyaml, requests and tqdm are
# diffai's dependencies already) dequantizes GGUF's quantized tensors; TFLite needs nothing.
# The statistics kernel (diffai/_kernel.c) is compiled here; the compiler leaves with the
# source in the same layer, so the image carries neither. The keras extra (h5py, 17 MB
# installed) reads .keras and Keras .h5 files, and MAT v7.3 files with it; the tensorflow
# extra (google-crc32c, under 0.1 MB) SavedModels and checkpoints, without TensorFlow. The
# remote extra (boto3, huggingface_hub) reads s3:// and hf:// models by range requests, so a
# model bigger than the runner's disk is gated without being downloaded. The run extra
# (onnxruntime, about 80 MB installed, with protobuf) runs ONNX models on probe inputs, only
# for a policy with regression_test.functional (docs/security.md says how it is confined).
COPY pyproject.toml setup.py README.md /src/
COPY diffai /src/diffai
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir "/src[gguf,keras,tensorflow,remote,run]" \
    && apt-get purge -y --auto-remove gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* /src

COPY entrypoint.py /app/entrypoint.py

# No USER line, on purpose: the runner mounts the checkout at /github/workspace (and the
# files behind GITHUB_OUTPUT and GITHUB_STEP_SUMMARY) owned by its own account and starts
# the container with that folder as the working directory. The Action must write the
# report directory and those files there, which an unprivileged user of this image could
# not; GitHub's documentation for Docker container actions asks for the default user.
ENTRYPOINT ["python", "/app/entrypoint.py"]
