//! Server settings, with the defaults documented in `docs/mesh-server.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// One file per team, named after it; the trimmed bytes are the team's HMAC key.
    pub team_keys_dir: PathBuf,
    /// How often the key directory is re-read.
    pub key_reload_interval: Duration,
    pub limits: Limits,
    /// Persistence: every message is kept in Redis Streams before it is acked.
    pub store: Option<crate::store::StoreConfig>,
    /// Redis through which several replicas form one mesh (`--redis`).
    pub cluster_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub rate: RateLimit,
    /// Largest `message` payload, as JSON bytes.
    pub max_message_bytes: usize,
    pub max_groups_per_agent: usize,
    pub max_connections_per_agent: usize,
    /// How long a recipient's client has to ack a message before `recipient_offline`.
    pub ack_timeout: Duration,
    pub dedup_ids_per_sender: usize,
    pub dedup_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate: RateLimit {
                per_second: 50.0,
                burst: 100,
            },
            max_message_bytes: 64 * 1024,
            max_groups_per_agent: 32,
            max_connections_per_agent: 8,
            ack_timeout: Duration::from_secs(5),
            dedup_ids_per_sender: 1024,
            dedup_window: Duration::from_secs(600),
        }
    }
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, team_keys_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            team_keys_dir: team_keys_dir.into(),
            key_reload_interval: Duration::from_secs(2),
            limits: Limits::default(),
            store: None,
            cluster_url: None,
        }
    }
}

/// Events per agent: a sustained rate and a burst (token bucket).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// A rate such as `50/s`, `3000/m` or `100000/h`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub f64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate `{input}`: {why} (expected COUNT/UNIT with UNIT s, m or h, e.g. 50/s)")]
pub struct RateParseError {
    input: String,
    why: &'static str,
}

impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |why| RateParseError {
            input: input.to_owned(),
            why,
        };
        let (count, unit) = input
            .trim()
            .split_once('/')
            .ok_or_else(|| err("missing `/`"))?;
        let count: f64 = count
            .trim()
            .parse()
            .map_err(|_| err("count is not a number"))?;
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(err("unknown unit")),
        };
        if !(count.is_finite() && count > 0.0) {
            return Err(err("count must be positive"));
        }
        Ok(Self(count / seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_any_unit_and_errors_show_the_format() {
        assert_eq!("50/s".parse::<Rate>().unwrap().0, 50.0);
        assert_eq!("3000/m".parse::<Rate>().unwrap().0, 50.0);
        assert_eq!(" 7200 / h ".parse::<Rate>().unwrap().0, 2.0);
        for bad in ["50", "x/s", "0/s", "5/d", "-1/s"] {
            let err = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(err.contains("e.g. 50/s"), "{err}");
        }
    }
}
