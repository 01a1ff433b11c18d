# PostgreSQL from Debian's package, for scripts/build_local_images.sh: docker-compose.yml's postgres service
# where the public postgres image cannot be pulled. It keeps the part of that image's contract the compose
# file uses: POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB make the role and database on first start,
# the data is in /var/lib/postgresql/data, `pg_isready` answers the health check.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /run/postgresql \
    && chmod 700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER postgres
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
# SIGINT is PostgreSQL's fast shutdown: sessions are ended, the server stops cleanly.
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
