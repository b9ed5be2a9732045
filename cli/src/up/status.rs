//! The running stack's numbers, read the way any client would: the mesh's `/metrics`, the
//! gateway's `/status`, and the MCP daemons' control sockets.

use std::fmt;
use std::path::Path;
use std::time::Duration;

/// One look at the stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// `None`: the mesh did not answer.
    pub(crate) mesh: Option<MeshNumbers>,
    pub(crate) gateway: Option<GatewayNumbers>,
    /// `nsh up` started no gateway (no preset could run).
    pub(crate) no_gateway: bool,
    pub(crate) daemons: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MeshNumbers {
    pub(crate) connections: u64,
    pub(crate) relayed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GatewayNumbers {
    pub(crate) answering: Vec<String>,
    pub(crate) waiting: Vec<String>,
    pub(crate) down: Vec<String>,
    pub(crate) tools: u64,
}

/// Reads the two numbers the status line shows from the mesh's Prometheus text.
pub(crate) fn mesh_numbers(metrics: &str) -> MeshNumbers {
    let mut numbers = MeshNumbers::default();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        if name == "nsh_mesh_connections" {
            numbers.connections = value;
        } else if name == "nsh_mesh_messages_total{outcome=\"delivered\"}" {
            numbers.relayed = value;
        }
    }
    numbers
}

pub(crate) struct Probe {
    http: rmcp_reqwest::Client,
    mesh_metrics: String,
    gateway_status: Option<String>,
    runtime_dir: std::path::PathBuf,
}

impl Probe {
    pub(crate) fn new(
        mesh: std::net::SocketAddr,
        gateway: Option<std::net::SocketAddr>,
        runtime_dir: &Path,
    ) -> Self {
        Self {
            http: rmcp_reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .no_proxy()
                .build()
                .unwrap_or_default(),
            mesh_metrics: format!("http://{mesh}/metrics"),
            gateway_status: gateway.map(|g| format!("http://{g}/status")),
            runtime_dir: runtime_dir.to_owned(),
        }
    }

    async fn text(&self, url: &str) -> Option<String> {
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    pub(crate) async fn snapshot(&self) -> Snapshot {
        let mesh = self
            .text(&self.mesh_metrics)
            .await
            .map(|t| mesh_numbers(&t));
        let gateway = match &self.gateway_status {
            Some(url) => self.text(url).await,
            None => None,
        };
        let gateway = gateway
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| {
                let names = |key: &str| -> Vec<String> {
                    v[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                };
                GatewayNumbers {
                    answering: names("answering"),
                    waiting: names("waiting"),
                    down: names("down"),
                    tools: v["tools"].as_u64().unwrap_or(0),
                }
            });
        let dir = self.runtime_dir.clone();
        let daemons = tokio::task::spawn_blocking(move || {
            nsh_mcp_daemon::control::list(&dir)
                .into_iter()
                .map(|d| d.name)
                .collect()
        })
        .await
        .unwrap_or_default();
        Snapshot {
            mesh,
            gateway,
            no_gateway: self.gateway_status.is_none(),
            daemons,
        }
    }
}

/// The one-line form, redrawn in place on a terminal.
impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mesh {
            Some(m) => write!(
                f,
                "mesh: {} connected, {} relayed",
                m.connections, m.relayed
            )?,
            None => write!(f, "mesh: not answering")?,
        }
        match &self.gateway {
            Some(g) => {
                write!(
                    f,
                    " | gateway: {} tools from {}",
                    g.tools,
                    if g.answering.is_empty() {
                        "no upstream yet".to_owned()
                    } else {
                        g.answering.join(", ")
                    }
                )?;
                if !g.waiting.is_empty() {
                    write!(f, " (starting: {})", g.waiting.join(", "))?;
                }
                if !g.down.is_empty() {
                    write!(f, " (down: {})", g.down.join(", "))?;
                }
            }
            None if self.no_gateway => write!(f, " | gateway: not started")?,
            None => write!(f, " | gateway: not answering")?,
        }
        if self.daemons.is_empty() {
            write!(f, " | daemons: none yet")
        } else {
            write!(f, " | daemons: {}", self.daemons.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_connections_and_delivered_messages() {
        let text = "# HELP nsh_mesh_connections Open Socket.io connections\n\
                    # TYPE nsh_mesh_connections gauge\n\
                    nsh_mesh_connections 2\n\
                    nsh_mesh_messages_total{outcome=\"delivered\"} 7\n\
                    nsh_mesh_messages_total{outcome=\"duplicate\"} 1\n";
        assert_eq!(
            mesh_numbers(text),
            MeshNumbers {
                connections: 2,
                relayed: 7
            }
        );
    }

    #[test]
    fn the_line_says_what_is_missing() {
        let snapshot = Snapshot {
            mesh: Some(MeshNumbers {
                connections: 2,
                relayed: 3,
            }),
            gateway: Some(GatewayNumbers {
                answering: vec!["memory".into()],
                waiting: vec!["filesystem".into()],
                down: vec![],
                tools: 9,
            }),
            no_gateway: false,
            daemons: vec!["server-memory".into()],
        };
        assert_eq!(
            snapshot.to_string(),
            "mesh: 2 connected, 3 relayed | gateway: 9 tools from memory (starting: filesystem) | daemons: server-memory"
        );
        assert_eq!(
            Snapshot::default().to_string(),
            "mesh: not answering | gateway: not answering | daemons: none yet"
        );
    }
}
