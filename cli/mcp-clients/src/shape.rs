//! One MCP server in each client's spelling, and back.

use nsh_agent_config::settings::{McpServer, Transport};
use serde_json::{Map, Value, json};

use crate::clients::{Client, Remote};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error(
        "{client} cannot take a server by URL in its config file; give a command instead (for example `npx -y mcp-remote URL`)"
    )]
    NoRemote { client: &'static str },
    #[error("the server has neither a command nor a URL")]
    Empty,
}

/// `server` as `client` writes it.
pub fn to_client(client: &Client, server: &McpServer) -> Result<Value, ShapeError> {
    let mut out = Map::new();
    if let Some(command) = &server.command {
        if client.stdio_type {
            out.insert("type".into(), "stdio".into());
        }
        out.insert("command".into(), command.clone().into());
        out.insert(
            "args".into(),
            json!(server.args.clone().unwrap_or_default()),
        );
        if let Some(env) = server.env.as_ref().filter(|e| !e.is_empty()) {
            out.insert("env".into(), json!(env));
        }
        return Ok(Value::Object(out));
    }
    let url = server.url.clone().ok_or(ShapeError::Empty)?;
    let sse = server.transport == Some(Transport::Sse);
    let headers = server
        .headers
        .as_ref()
        .filter(|h| !h.is_empty())
        .map(|h| json!(h));
    let mut headers_as = "headers";
    match client.remote {
        Remote::TypeAndUrl => {
            out.insert("type".into(), if sse { "sse" } else { "http" }.into());
            out.insert("url".into(), url.into());
        }
        Remote::Url => {
            out.insert("url".into(), url.into());
        }
        Remote::ServerUrl => {
            out.insert("serverUrl".into(), url.into());
        }
        Remote::HttpUrl => {
            out.insert(if sse { "url" } else { "httpUrl" }.into(), url.into());
        }
        Remote::CodexUrl => {
            out.insert("url".into(), url.into());
            headers_as = "http_headers";
        }
        Remote::Unsupported => {
            return Err(ShapeError::NoRemote {
                client: client.name,
            });
        }
    }
    if let Some(headers) = headers {
        out.insert(headers_as.into(), headers);
    }
    Ok(Value::Object(out))
}

/// A client's entry read back into the neutral form (unknown fields are ignored here and kept
/// in the file).
pub fn from_client(value: &Value) -> McpServer {
    let string = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let strings = |key: &str| {
        value.get(key).and_then(Value::as_array).map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
    };
    let map = |key: &str| {
        value.get(key).and_then(Value::as_object).map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
    };
    let url = string("url")
        .or_else(|| string("serverUrl"))
        .or_else(|| string("httpUrl"));
    let transport = match string("type").as_deref() {
        Some("sse") => Some(Transport::Sse),
        Some("http" | "streamable-http") => Some(Transport::Http),
        Some("stdio") => Some(Transport::Stdio),
        _ if value.get("httpUrl").is_some() => Some(Transport::Http),
        _ => None,
    };
    McpServer {
        transport,
        command: string("command"),
        args: strings("args"),
        env: map("env"),
        url,
        headers: map("headers").or_else(|| map("http_headers")),
        headers_helper: string("headersHelper"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::clients::client;

    fn remote() -> McpServer {
        McpServer {
            url: Some("https://mcp.example/mcp".into()),
            headers: Some(BTreeMap::from([(
                "Authorization".into(),
                "Bearer x".into(),
            )])),
            ..McpServer::default()
        }
    }

    #[test]
    fn each_client_spells_a_remote_server_its_own_way() {
        let shaped = |id| to_client(client(id).unwrap(), &remote());
        assert_eq!(
            shaped("vscode").unwrap(),
            json!({ "type": "http", "url": "https://mcp.example/mcp", "headers": { "Authorization": "Bearer x" } })
        );
        assert_eq!(
            shaped("windsurf").unwrap()["serverUrl"],
            "https://mcp.example/mcp"
        );
        assert_eq!(
            shaped("gemini").unwrap()["httpUrl"],
            "https://mcp.example/mcp"
        );
        assert_eq!(
            shaped("codex").unwrap()["http_headers"]["Authorization"],
            "Bearer x"
        );
        assert!(matches!(
            shaped("claude-desktop"),
            Err(ShapeError::NoRemote { .. })
        ));
        for id in crate::clients::ids() {
            if let Ok(value) = shaped(id) {
                assert_eq!(from_client(&value).url, remote().url, "{id}");
            }
        }
    }

    #[test]
    fn stdio_servers_round_trip() {
        let server = McpServer {
            command: Some("npx".into()),
            args: Some(vec!["-y".into(), "pkg".into()]),
            env: Some(BTreeMap::from([("K".into(), "V".into())])),
            ..McpServer::default()
        };
        let vscode = to_client(client("vscode").unwrap(), &server).unwrap();
        assert_eq!(vscode["type"], "stdio");
        let cursor = to_client(client("cursor").unwrap(), &server).unwrap();
        assert!(cursor.get("type").is_none());
        let back = from_client(&cursor);
        assert_eq!(
            (back.command, back.args, back.env),
            (server.command, server.args, server.env)
        );
    }
}
