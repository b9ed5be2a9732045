# The nsh image: one static binary for the operator, the mesh server, the MCP gateway and
# daemon, and the agents' mesh-client sidecar.
#
# It packages a binary built beforehand (as kube-rs's controller-rs image does), so the image
# build needs no Rust toolchain and reuses cargo's cache:
#   cargo build --release --locked -p nsh --target x86_64-unknown-linux-musl
#   scripts/images.sh                  # assembles the context, builds with buildah or docker
# The context holds: nsh (the static binary), ca-certificates.crt, passwd, group.
FROM scratch
COPY passwd group /etc/
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY nsh /usr/local/bin/nsh
# The distroless `nonroot` user; the operator's pods run as it with a read-only root.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/nsh"]
