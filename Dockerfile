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

# pg_dump and pg_restore are needed only by the database steps; a target
# that uses them runs an image with the PostgreSQL client (see docs).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/rollguard /rollguard
USER 65532:65532
EXPOSE 9847
ENTRYPOINT ["/rollguard"]
