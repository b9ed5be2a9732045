//! The audit log: one JSON line per request, to stdout (in a pod, what the log collector
//! reads) or appended to a file. Arguments appear only with `logArguments`, with the values of
//! keys matching the redaction globs replaced.

use std::io::Write as _;
use std::sync::Mutex;

use nsh_gateway_config::Audit as AuditSpec;
use serde::Serialize;
use wildmatch::WildMatch;

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allowed,
    /// The policy refused it (the caller was told the tool does not exist).
    Denied,
    /// No such tool, prompt or resource.
    Unknown,
    /// Hidden because its upstream changed it after it was pinned.
    Changed,
    RateLimited,
    /// The upstream's concurrency bound was full.
    Busy,
    /// The upstream is down or failed.
    UpstreamError,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Unknown => "unknown",
            Self::Changed => "changed",
            Self::RateLimited => "rate_limited",
            Self::Busy => "busy",
            Self::UpstreamError => "upstream_error",
        }
    }
}

/// One request's line.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    pub team: &'a str,
    pub agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<&'a str>,
    pub method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<&'a str>,
    pub decision: Decision,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<usize>,
    /// Entries in a listing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_items: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
}

/// An event that is not a request: a tool pinned, a pinned tool changed.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub event: &'a str,
    pub upstream: &'a str,
    pub tool: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<&'a str>,
    pub hash: &'a str,
}

pub struct AuditLog {
    spec: AuditSpec,
    redact: Vec<WildMatch>,
    out: Mutex<Box<dyn std::io::Write + Send>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("spec", &self.spec)
            .finish()
    }
}

impl AuditLog {
    pub fn open(spec: &AuditSpec) -> std::io::Result<Self> {
        let out: Box<dyn std::io::Write + Send> = match spec.file.as_deref() {
            None | Some("stdout") | Some("-") => Box::new(std::io::stdout()),
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        Ok(Self {
            redact: spec
                .redact
                .iter()
                .map(|p| WildMatch::new_case_insensitive(p))
                .collect(),
            spec: spec.clone(),
            out: Mutex::new(out),
        })
    }

    pub fn logs_arguments(&self) -> bool {
        self.spec.enabled && self.spec.log_arguments
    }

    /// `arguments` with every value under a redacted key replaced, at any depth.
    pub fn redacted(
        &self,
        arguments: &serde_json::Map<String, serde_json::Value>,
    ) -> serde_json::Value {
        let mut value = serde_json::Value::Object(arguments.clone());
        self.redact_in(&mut value);
        value
    }

    fn redact_in(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map.iter_mut() {
                    if self.redact.iter().any(|p| p.matches(key)) {
                        *inner = serde_json::Value::String("[redacted]".into());
                    } else {
                        self.redact_in(inner);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_in(v)),
            _ => {}
        }
    }

    pub fn write(&self, line: &impl Serialize) {
        if !self.spec.enabled {
            return;
        }
        #[derive(Serialize)]
        struct Stamped<'a, T> {
            time: String,
            audit: &'static str,
            #[serde(flatten)]
            line: &'a T,
        }
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let Ok(mut bytes) = serde_json::to_vec(&Stamped {
            time,
            audit: "nsh-gateway",
            line,
        }) else {
            return;
        };
        bytes.push(b'\n');
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(err) = out.write_all(&bytes).and_then(|()| out.flush()) {
            tracing::error!(%err, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_reaches_nested_keys_case_insensitively() {
        let log = AuditLog::open(&AuditSpec::default()).unwrap();
        let args = serde_json::json!({
            "query": "x",
            "GitHub_Token": "ghp_1",
            "nested": [{ "password": "p", "keep": 1 }],
            "Authorization": "Bearer abc",
        });
        let out = log.redacted(args.as_object().unwrap());
        assert_eq!(
            out,
            serde_json::json!({
                "query": "x",
                "GitHub_Token": "[redacted]",
                "nested": [{ "password": "[redacted]", "keep": 1 }],
                "Authorization": "[redacted]",
            })
        );
    }
}
