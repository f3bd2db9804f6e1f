# jwtgate in a container: built with the Rust image, run as a non-root user on distroless.
# Not built by CI (no image registry is reachable from it); tests/deploy.rs checks what this
# file names. Build with the version and commit stamped on the image:
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) -t jwtgate .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Symbols stripped: about half the size; panics still name their location.
RUN CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --bin jwtgate

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="jwtgate" \
      org.opencontainers.image.description="Self-validating JWT gateway sidecar for WSO2 Asgardeo, with APIM key-manager sync" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/example/jwtgate" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /src/target/release/jwtgate /usr/local/bin/jwtgate
# Listens where a container can be reached (proxy 8080, health 9902; admin stays on loopback).
COPY config/jwtgate.container.toml /etc/jwtgate/jwtgate.toml
USER nonroot
EXPOSE 8080 9902
ENTRYPOINT ["/usr/local/bin/jwtgate"]
CMD ["serve", "--config", "/etc/jwtgate/jwtgate.toml"]
