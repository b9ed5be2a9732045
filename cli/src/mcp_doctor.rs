//! One `nsh mcp doctor` check: start the server (or connect to its URL), run the MCP
//! `initialize` handshake and `tools/list` within a timeout, and say what went wrong in words a
//! person can act on.

use std::fmt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nsh_agent_config::settings::McpServer;
use rmcp::ServiceExt as _;
use rmcp::model::{ClientConfig, ProtocolVersion};
use tokio::io::AsyncReadExt as _;

/// What a healthy server said about itself.
#[derive(Debug)]
pub(crate) struct Healthy {
    name: String,
    version: String,
    tools: usize,
}

impl fmt::Display for Healthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.tools == 1 { "" } else { "s" };
        write!(
            f,
            "{} {}: {} tool{plural}",
            self.name, self.version, self.tools
        )
    }
}

/// How much of a failed server's stderr the report quotes.
const STDERR_TAIL: usize = 400;

fn client_config() -> ClientConfig {
    // The handshake today's clients do (2025-11-25), so any server of the last year answers.
    let mut config =
        ClientConfig::default().with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    config.client_info =
        rmcp::model::Implementation::new("nsh-mcp-doctor", env!("CARGO_PKG_VERSION"));
    config
}

pub(crate) async fn probe(server: &McpServer, timeout: Duration) -> Result<Healthy, String> {
    match (&server.command, &server.url) {
        (Some(command), _) => probe_command(command, server, timeout).await,
        (None, Some(url)) => probe_url(url, server, timeout).await,
        (None, None) => Err("the entry has neither `command` nor `url`".into()),
    }
}

async fn handshake<T, E, A>(transport: T, timeout: Duration) -> Result<Healthy, Failure>
where
    T: rmcp::transport::IntoTransport<rmcp::RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let talk = async {
        let client = client_config()
            .serve(transport)
            .await
            .map_err(|e| Failure::Initialize(Box::new(e)))?;
        let tools = client.list_all_tools().await.map_err(Failure::ListTools)?;
        let server_info = client.peer_info().and_then(|i| i.server_info.clone());
        let healthy = Healthy {
            name: server_info
                .as_ref()
                .map_or_else(|| "?".into(), |i| i.name.clone()),
            version: server_info.map(|i| i.version).unwrap_or_default(),
            tools: tools.len(),
        };
        let _ = client.cancel().await;
        Ok(healthy)
    };
    tokio::time::timeout(timeout, talk)
        .await
        .unwrap_or(Err(Failure::Timeout(timeout)))
}

enum Failure {
    Timeout(Duration),
    Initialize(Box<rmcp::service::ClientInitializeError>),
    ListTools(rmcp::ServiceError),
}

impl Failure {
    /// Whether the server went away mid-handshake (rather than answering wrongly): told by
    /// rmcp's error variants and, for transport errors, the I/O error kind underneath.
    fn closed(&self) -> bool {
        use rmcp::service::ClientInitializeError as Init;
        match self {
            Self::Timeout(_) => false,
            Self::Initialize(err) => match err.as_ref() {
                Init::ConnectionClosed(_) => true,
                Init::TransportError { error, .. } => io_gone(error),
                _ => false,
            },
            Self::ListTools(rmcp::ServiceError::TransportClosed) => true,
            Self::ListTools(rmcp::ServiceError::TransportSend(error)) => io_gone(error),
            Self::ListTools(_) => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(after) => write!(f, "no answer within {after:?}"),
            Self::Initialize(err) => match err.as_ref() {
                // The transport's own error is not rmcp's `source`: start from it.
                rmcp::service::ClientInitializeError::TransportError { error, .. } => {
                    write!(f, "initialize failed: {}", causes(error.error.as_ref()))
                }
                other => write!(f, "initialize failed: {}", causes(other)),
            },
            Self::ListTools(err) => write!(f, "tools/list failed: {}", causes(err)),
        }
    }
}

/// `error` and what went wrong underneath it (`…: dns error: failed to lookup address
/// information: …`), each cause once.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(mut err) = next {
        // rmcp does not chain the HTTP client's error as a source; its cause (a DNS failure,
        // a refused connection) is what the user needs.
        if let Some(StreamableHttpError::Client(client)) =
            err.downcast_ref::<StreamableHttpError<rmcp_reqwest::Error>>()
        {
            err = client;
        }
        let said = err.to_string();
        if !text.contains(&said) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&said);
        }
        next = err.source();
    }
    text
}

/// Whether an I/O error in `error`'s source chain means the peer is gone.
fn io_gone(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = err.source();
    }
    false
}

async fn probe_command(
    command: &str,
    server: &McpServer,
    timeout: Duration,
) -> Result<Healthy, String> {
    let program = expand(command);
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(server.args.iter().flatten().map(|a| expand(a)))
        .envs(server.env.iter().flatten().map(|(k, v)| (k, expand(v))))
        .kill_on_drop(true);
    let (transport, stderr) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("command not found: `{program}` (is it installed and on PATH?)")
            }
            std::io::ErrorKind::PermissionDenied => format!("`{program}` is not executable"),
            _ => format!("cannot start `{program}`: {e}"),
        })?;
    let pid = transport.id();
    let tail = Arc::new(Mutex::new(Vec::<u8>::new()));
    if let Some(mut stderr) = stderr {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let mut tail = tail.lock().expect("stderr lock");
                tail.extend_from_slice(&chunk[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL * 4);
                tail.drain(..excess);
            }
        });
    }
    match handshake(transport, timeout).await {
        Ok(healthy) => Ok(healthy),
        Err(failure) => {
            // Give the reader a moment to collect what the process said before it died.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let said = String::from_utf8_lossy(&tail.lock().expect("stderr lock"))
                .trim()
                .to_owned();
            let said = said
                .char_indices()
                .rev()
                .nth(STDERR_TAIL)
                .map_or(said.as_str(), |(i, _)| &said[i..])
                .to_owned();
            Err(match failure {
                Failure::Timeout(after) => format!(
                    "no answer to initialize/tools/list within {after:?}{}",
                    quote(&said)
                ),
                failure if exited(pid) || failure.closed() => {
                    format!("exited before completing the MCP handshake{}", quote(&said))
                }
                failure => format!("protocol error: {failure}{}", quote(&said)),
            })
        }
    }
}

/// Whether the process is gone (or a zombie waiting to be reaped).
fn exited(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: `123 (sh) Z ...`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => cfg!(target_os = "linux"),
    }
}

fn quote(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {stderr}")
    }
}

async fn probe_url(url: &str, server: &McpServer, timeout: Duration) -> Result<Healthy, String> {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let mut headers = std::collections::HashMap::new();
    for (key, value) in server.headers.iter().flatten() {
        let name =
            http::HeaderName::try_from(key.as_str()).map_err(|e| format!("header `{key}`: {e}"))?;
        let value = http::HeaderValue::try_from(expand(value))
            .map_err(|e| format!("header `{key}`: {e}"))?;
        headers.insert(name, value);
    }
    let config = StreamableHttpClientTransportConfig::with_uri(expand(url)).custom_headers(headers);
    let transport = StreamableHttpClientTransport::from_config(config);
    handshake(transport, timeout)
        .await
        .map_err(|failure| match failure {
            Failure::Timeout(after) => format!("no answer from {url} within {after:?}"),
            failure => format!("{url}: {failure}"),
        })
}

/// Expands `${VAR}` and `${VAR:-default}` from the environment, as Claude Code does in MCP
/// configs; anything else (VS Code's `${input:…}`) is left as written.
fn expand(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &rest[start + 2..start + end];
        let (name, default) = inner
            .split_once(":-")
            .map_or((inner, None), |(n, d)| (n, Some(d)));
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match (valid, std::env::var(name).ok(), default) {
            (true, Some(value), _) => out.push_str(&value),
            (true, None, Some(default)) => out.push_str(default),
            _ => out.push_str(&rest[start..=start + end]),
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn variables_expand_like_claude_code() {
        // PATH is always set; NSH_SURELY_UNSET_VAR is not.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(expand("a ${PATH} b"), format!("a {path} b"));
        assert_eq!(expand("${NSH_SURELY_UNSET_VAR:-fallback}"), "fallback");
        assert_eq!(expand("${NSH_SURELY_UNSET_VAR}"), "${NSH_SURELY_UNSET_VAR}");
        assert_eq!(expand("Bearer ${input:token}"), "Bearer ${input:token}");
        assert_eq!(
            expand("no vars, ${ unterminated"),
            "no vars, ${ unterminated"
        );
    }
}
