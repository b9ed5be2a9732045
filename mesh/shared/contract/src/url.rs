//! In-cluster URLs: what the operator writes into agents' settings and objects' status, and
//! what `nsh` on a laptop prints for a cluster.

/// Port of every McpGateway's Service.
pub const GATEWAY_PORT: u16 = 8080;
/// Port a mesh server listens on when nothing says otherwise.
pub const DEFAULT_MESH_PORT: u16 = 3456;
/// The mesh server `nsh` talks to when nothing says otherwise (the one `nsh up` runs).
pub const DEFAULT_MESH_URL: &str = "ws://127.0.0.1:3456";

/// The Socket.io URL of MeshServer `name`'s Service in `namespace`.
pub fn mesh_service(name: &str, namespace: &str, port: i32) -> String {
    format!("ws://{name}.{namespace}.svc:{port}")
}

/// The MCP (streamable HTTP) URL of McpGateway `name`'s Service in `namespace`.
pub fn gateway_service(name: &str, namespace: &str) -> String {
    format!("http://{name}.{namespace}.svc:{GATEWAY_PORT}/mcp")
}

/// The audience (`aud`) McpGateway `name` in `namespace` accepts: Agent tokens that name it
/// in `gatewayRef` carry it beside the mesh's.
pub fn gateway_audience(name: &str, namespace: &str) -> String {
    format!("nsh-gateway/{namespace}/{name}")
}

/// The MCP URL of a streamable-HTTP server (the mesh-client sidecar) listening on `listen`.
pub fn mcp_endpoint(listen: std::net::SocketAddr) -> String {
    format!("http://{listen}/mcp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_service_in_its_namespace() {
        assert_eq!(
            mesh_service("mesh", "team-a", 3456),
            "ws://mesh.team-a.svc:3456"
        );
        assert_eq!(
            gateway_service("tools", "team-a"),
            "http://tools.team-a.svc:8080/mcp"
        );
        assert_eq!(
            mcp_endpoint("127.0.0.1:8765".parse().unwrap()),
            "http://127.0.0.1:8765/mcp"
        );
        assert_eq!(DEFAULT_MESH_URL, mesh_url_on_loopback(DEFAULT_MESH_PORT));
    }

    fn mesh_url_on_loopback(port: u16) -> String {
        format!("ws://127.0.0.1:{port}")
    }
}
