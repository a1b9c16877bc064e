# The agent-node image: one static binary on an empty base (no libtorch: the
# policy's forward pass is pure Rust).
#
# Built by deploy/build-images.sh from a context holding only the binary
# (`agent-node`, linked statically against glibc). Configure it through the
# environment (PEERGRID_MARKET, PEERGRID_AGENT_PROSUMERS, PEERGRID_LEARNER,
# PEERGRID_AGENT_TOKEN_FILE, ...; see agent-node/README.md). The health check
# asks the market for its status with the node's own token: healthy means
# "this node can reach and authenticate to its market".
FROM scratch
COPY agent-node /usr/local/bin/agent-node
ENV PEERGRID_AGENT_METRICS_LISTEN=0.0.0.0:9102
EXPOSE 9102
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/agent-node", "health"]
ENTRYPOINT ["/usr/local/bin/agent-node"]
