# syntax=docker/dockerfile:1
# Spindle's three images, one target each:
#   docker build --target agent    -t spindle-agent:dev .
#   docker build --target operator -t spindle-operator:dev .
#   docker build --target csi      -t spindle-csi:dev .
# The final images hold the binary and the C libraries it links (laid out by e2e/images/rootfs,
# the same script e2e/images/build uses to make these images without Docker), nothing else.

FROM rust:1.95-bookworm AS build
# Go fetches the CSI spec's csi.proto from the Go module proxy (csi/build.rs); nsenter goes into
# the CSI image.
RUN apt-get update && apt-get install -y --no-install-recommends golang-go util-linux \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    --mount=type=cache,target=/root/go/pkg/mod \
    cargo build --release --locked -p spindle-agent -p spindle-operator -p spindle-csi \
    && e2e/images/rootfs target/release/spindle-agent /out/agent \
    && e2e/images/rootfs target/release/spindle-operator /out/operator \
    && e2e/images/rootfs target/release/spindle-csi /out/csi /usr/bin/nsenter

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

# The CSI driver: the controller runs it as nonroot; the node plugin's pod (privileged) runs it
# as root and uses the host's open-iscsi through nsenter.
FROM scratch AS csi
ARG VERSION=dev
LABEL org.opencontainers.image.title=spindle-csi org.opencontainers.image.version=$VERSION
COPY --from=build /out/csi/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/spindle-csi"]
