# The agent-node image: one static binary on an empty base (no libtorch: the
# policy's forward pass is pure Rust).
#
# Built by deploy/build-images.sh from a context holding only the binary
# (`agent-node`, linked statically against glibc) and `state.tar`: the empty
# directory /var/lib/peergrid/agent owned by 65532 (a scratch image cannot
# RUN mkdir/chown; ADD unpacks the tar with the owners it records). Mount a
# volume there and set PEERGRID_AGENT_STATE_DIR=/var/lib/peergrid/agent
# (deploy/compose.yaml does) to keep the node's session and households
# across restarts: a fresh volume starts as a copy of the directory, so the
# node can write it on a read-only root.
#
# Configure the node through the environment (PEERGRID_MARKET,
# PEERGRID_AGENT_PROSUMERS, PEERGRID_LEARNER, PEERGRID_AGENT_TOKEN_FILE,
# ...; see agent-node/README.md). The health check asks the market for its
# status with the node's own token: healthy means "this node can reach and
# authenticate to its market".
FROM scratch
ADD state.tar /
COPY agent-node /usr/local/bin/agent-node
ENV PEERGRID_AGENT_METRICS_LISTEN=0.0.0.0:9102
EXPOSE 9102
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/agent-node", "health"]
ENTRYPOINT ["/usr/local/bin/agent-node"]
