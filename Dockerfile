# rollguard: a static binary on distroless, non-root. Images cannot be built
# in the sandbox (no Docker engine); this is what CI/CD builds elsewhere.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/rollguard/rollguard/pkg/version.Version=${VERSION}" \
    -o /out/rollguard ./cmd/rollguard

# With the PostgreSQL 15 client, for targets whose rollback uses the
# database steps (pg_dump, pg_restore): docker build --target with-pg.
# The config's binDir is then /usr/lib/postgresql/15/bin.
FROM debian:12-slim AS with-pg
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client-15 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/rollguard /rollguard
USER 65532:65532
EXPOSE 9847
ENTRYPOINT ["/rollguard"]

# The default: a static binary on distroless, non-root, nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/rollguard /rollguard
USER 65532:65532
EXPOSE 9847
ENTRYPOINT ["/rollguard"]
