# dynlaunch on top of NVIDIA's Dynamo SGLang runtime image: the same image (ai-dynamo, SGLang and
# CUDA untouched) with `dynlaunch` as the entrypoint and PID 1 (signals, reaping, restarts,
# readiness gates). Manifests from `dynlaunch render k8s` run it in role mode:
#   command: [dynlaunch]
#   args: [up, sglang, --role, frontend|worker, --config, /etc/dynlaunch/config.yaml]
#
#   docker build -t REGISTRY/dynlaunch-sglang:0.5.0 .
#   docker build --build-arg BASE=nvcr.io/nvidia/ai-dynamo/sglang-runtime:0.6.1 \
#     -t REGISTRY/dynlaunch-sglang:0.6.1 .
ARG BASE=nvcr.io/nvidia/ai-dynamo/sglang-runtime:0.5.0
FROM ${BASE}

# Only what the package needs (.dockerignore keeps the rest out); ai-dynamo comes with the base.
COPY pyproject.toml README.md /opt/dynlaunch/src/
COPY launcher/ /opt/dynlaunch/src/launcher/
# Into the image's own Python, the one that has ai-dynamo (dynlaunch reads its version there).
# Dynamo images build that venv with uv, which may leave pip out of it.
RUN if command -v uv >/dev/null 2>&1; then \
      uv pip install --no-cache --python "$(command -v python3)" /opt/dynlaunch/src; \
    else \
      python3 -m pip install --no-cache-dir /opt/dynlaunch/src; \
    fi \
 && dynlaunch --version

ENTRYPOINT ["dynlaunch"]
CMD ["up", "sglang", "--config", "/etc/dynlaunch/config.yaml"]
