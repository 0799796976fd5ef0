# syntax=docker/dockerfile:1
# Spindle's two images, one target each:
#   docker build --target agent    -t spindle-agent:dev .
#   docker build --target operator -t spindle-operator:dev .
# The final images hold the binary and the C libraries it links (laid out by e2e/images/rootfs,
# the same script e2e/images/build uses to make these images without Docker), nothing else.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p spindle-agent -p spindle-operator \
    && e2e/images/rootfs target/release/spindle-agent /out/agent \
    && e2e/images/rootfs target/release/spindle-operator /out/operator

# The operator needs no privilege at all: it runs as nonroot (65532).
FROM scratch AS operator
ARG VERSION=dev
LABEL org.opencontainers.image.title=spindle-operator org.opencontainers.image.version=$VERSION
COPY --from=build /out/operator/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/spindle-operator"]

# The agent runs as root to own its data dir on the host; the chart drops every capability.
FROM scratch AS agent
ARG VERSION=dev
LABEL org.opencontainers.image.title=spindle-agent org.opencontainers.image.version=$VERSION
COPY --from=build /out/agent/ /
USER 0:0
ENTRYPOINT ["/usr/local/bin/spindle-agent"]
