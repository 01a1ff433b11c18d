# Redis from Debian's package, for scripts/build_local_images.sh: docker-compose.yml's redis service where
# the public redis image cannot be pulled. It keeps the contract the compose file relies on: `redis-server`
# and `redis-cli` on the PATH, data in /data (the working directory), reachable from the project network.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/redis-entrypoint
USER redis
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]
CMD ["redis-server"]
