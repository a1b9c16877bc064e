# The operator's image: the static `peergrid` command on an empty base, for
# `docker-compose run --rm cli ctl status` on the cluster's network.
FROM scratch
COPY peergrid /usr/local/bin/peergrid
ENV PEERGRID_MARKET=http://market-node:50051
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/peergrid"]
