# The operator's image: the `peergrid` command, for
# `docker-compose run --rm cli ctl status` on the cluster's network.
#
# `peergrid` itself does not link libtorch, but `peergrid run` executes
# `peergrid-run`, which trains in-process through the trainer's crate and
# needs exactly the trainer image's libraries: the image is the trainer
# image plus the two binaries, sharing all its layers. Built by
# deploy/build-images.sh after the trainer image, from a context holding
# only the two binaries.
ARG TRAINER_IMAGE=peergrid/trainer:latest
FROM ${TRAINER_IMAGE}
COPY peergrid peergrid-run /usr/local/bin/
ENV PEERGRID_MARKET=http://market-node:50051
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/peergrid"]
