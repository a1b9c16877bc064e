# The market-node image: one static binary on an empty base.
#
# Built by deploy/build-images.sh from a context holding only the binary
# (`market-node`, linked statically against glibc with
# `-C target-feature=+crt-static`): nothing is compiled or installed here.
# The binary resolves names with glibc's built-in `files` and `dns` lookups
# (Docker provides /etc/hosts and /etc/resolv.conf), and checks its own
# health through the gRPC health service: there is no shell in the image.
FROM scratch
COPY market-node /usr/local/bin/market-node
ENV PEERGRID_MARKET_LISTEN=0.0.0.0:50051 \
    PEERGRID_MARKET_METRICS_LISTEN=0.0.0.0:9100
EXPOSE 50051 9100
USER 65532:65532
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/market-node", "health", "--addr", "http://127.0.0.1:50051"]
ENTRYPOINT ["/usr/local/bin/market-node"]
