# The trainer image: the host-built `trainer` binary and exactly the
# libtorch shared libraries it loads, on a small Debian base.
#
# Built by deploy/build-images.sh from a context holding `trainer` and
# `lib/` (the libraries `ldd` resolves into the project's torch wheel:
# libtorch_cpu, libc10, libgomp, and the CUDA runtime and CUPTI libraries
# libtorch_cpu names even when it runs on CPU). Everything else (glibc,
# libstdc++) is the base image's. Offline machines make the base with
# deploy/base-image.sh; online ones pull it.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# Checkpoints and TensorBoard files: a volume, owned by the unprivileged user
# so a fresh named volume inherits a writable directory.
RUN mkdir -p /var/lib/peergrid/runs && chown 65532:65532 /var/lib/peergrid/runs
COPY lib/ /opt/peergrid/lib/
COPY trainer /usr/local/bin/trainer
ENV LD_LIBRARY_PATH=/opt/peergrid/lib \
    PEERGRID_TRAINER_LISTEN=0.0.0.0:50061 \
    PEERGRID_TRAINER_METRICS_LISTEN=0.0.0.0:9101 \
    PEERGRID_TRAINER_RUN_DIR=/var/lib/peergrid/runs
EXPOSE 50061 9101
USER 65532:65532
HEALTHCHECK --interval=5s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/trainer", "health", "--addr", "http://127.0.0.1:50061"]
ENTRYPOINT ["/usr/local/bin/trainer"]
