# jwtgate in a container: built with the Rust image, run as a non-root user on distroless.
# Not built by CI (no image registry is reachable from it); see README "Operating".
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/jwtgate /usr/local/bin/jwtgate
COPY config/jwtgate.example.toml /etc/jwtgate/jwtgate.toml
USER nonroot
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/jwtgate"]
CMD ["serve", "--config", "/etc/jwtgate/jwtgate.toml"]
