# The operator's image: the `peergrid` command, for
# `docker-compose run --rm cli ctl status` on the cluster's network.
#
# `peergrid` links libtorch (its `run` trains in-process through the
# trainer's crate), so it needs exactly the trainer image's libraries: it is
# that image plus one binary, sharing all its layers. Built by
# deploy/build-images.sh after the trainer image, from a context holding
# only `peergrid`.
ARG TRAINER_IMAGE=peergrid/trainer:latest
FROM ${TRAINER_IMAGE}
COPY peergrid /usr/local/bin/peergrid
ENV PEERGRID_MARKET=http://market-node:50051
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/peergrid"]
