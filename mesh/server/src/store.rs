//! The message store (persistence on): Redis Streams.
//!
//! Keys, all under the `nsh:` prefix and scoped by team:
//! - `nsh:{team}:inbox:{agent}`: every direct message to the agent, in order;
//!   `nsh:{team}:cursor:{agent}` is the last entry its client acked, so a reconnect resumes
//!   right after it (and only moves forward, whichever replica writes it);
//! - `nsh:{team}:dm:{a}:{b}` (names sorted) and `nsh:{team}:group:{group}`: the conversations,
//!   for `history`;
//! - `nsh:streams`: every stream key, for the retention sweep.
//!
//! Each entry holds the envelope as JSON (`m`) and its expiry in Unix milliseconds (`exp`, 0 for
//! none). Streams are capped with `MAXLEN ~` on every append and swept with `MINID ~` for the
//! retention age, so Redis memory stays bounded; expired entries are never delivered.

use std::time::Duration;

use nsh_mesh_transport::wire::Envelope;
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Messages older than this are trimmed.
    pub retention: Duration,
    /// Most entries kept per stream (approximately: `MAXLEN ~`).
    pub max_len: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad Redis URL: {0}")]
    Url(redis::RedisError),
    #[error("the message store (Redis) is unavailable: {0}")]
    Unavailable(redis::RedisError),
    #[error("a stored message is corrupt: {0}")]
    Corrupt(String),
}

/// One stored message and its stream entry id (`<ms>-<seq>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub entry: String,
    pub envelope: Envelope,
}

/// Which conversation `history` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversation {
    Group(String),
    /// The direct conversation between the two agents.
    Direct(String, String),
}

const STREAMS: &str = "nsh:streams";

/// Moves the cursor to ARGV[1] only if it is after the current one: acks from several
/// connections or replicas can arrive in any order.
const ADVANCE_CURSOR: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local cm, cs = string.match(current, '(%d+)-(%d+)')
  local nm, ns = string.match(ARGV[1], '(%d+)-(%d+)')
  cm, cs, nm, ns = tonumber(cm), tonumber(cs), tonumber(nm), tonumber(ns)
  if nm < cm or (nm == cm and ns <= cs) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

/// `<ms>-<seq>` as a pair, for ordering entry ids.
pub fn entry_order(entry: &str) -> (u64, u64) {
    let (ms, seq) = entry.split_once('-').unwrap_or((entry, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    config: StoreConfig,
    advance: redis::Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store that connects on first use and reconnects by itself; operations fail fast
    /// (a couple of seconds) while Redis is away instead of hanging the sender.
    pub fn new(config: StoreConfig) -> Result<Self, StoreError> {
        let client = redis::Client::open(config.url.as_str()).map_err(StoreError::Url)?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(StoreError::Url)?;
        Ok(Self {
            conn,
            config,
            advance: redis::Script::new(ADVANCE_CURSOR),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn inbox_key(team: &str, agent: &str) -> String {
        format!("nsh:{team}:inbox:{agent}")
    }

    fn cursor_key(team: &str, agent: &str) -> String {
        format!("nsh:{team}:cursor:{agent}")
    }

    fn conversation_key(team: &str, conversation: &Conversation) -> String {
        match conversation {
            Conversation::Group(group) => format!("nsh:{team}:group:{group}"),
            Conversation::Direct(a, b) => {
                let (first, second) = if a <= b { (a, b) } else { (b, a) };
                format!("nsh:{team}:dm:{first}:{second}")
            }
        }
    }

    fn expiry_ms(envelope: &Envelope) -> u64 {
        envelope
            .ttl
            .map_or(0, |ttl| now_ms().saturating_add(ttl.saturating_mul(1000)))
    }

    fn xadd(&self, pipe: &mut redis::Pipeline, key: &str, json: &str, exp: u64) {
        pipe.cmd("XADD")
            .arg(key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.max_len)
            .arg("*")
            .arg("m")
            .arg(json)
            .arg("exp")
            .arg(exp);
    }

    /// Appends a direct message to the recipient's inbox and to the conversation, atomically.
    /// Returns the inbox entry id.
    pub async fn append_direct(
        &self,
        team: &str,
        to: &str,
        envelope: &Envelope,
    ) -> Result<String, StoreError> {
        let json = serde_json::to_string(envelope).expect("an envelope serializes");
        let exp = Self::expiry_ms(envelope);
        let inbox = Self::inbox_key(team, to);
        let conversation = Self::conversation_key(
            team,
            &Conversation::Direct(envelope.from.clone(), to.to_owned()),
        );
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.xadd(&mut pipe, &inbox, &json, exp);
        self.xadd(&mut pipe, &conversation, &json, exp);
        pipe.cmd("SADD")
            .arg(STREAMS)
            .arg(&inbox)
            .arg(&conversation)
            .ignore();
        let (entry, _): (String, String) = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(entry)
    }

    /// Appends a group message to the group's conversation.
    pub async fn append_group(
        &self,
        team: &str,
        group: &str,
        envelope: &Envelope,
    ) -> Result<String, StoreError> {
        let json = serde_json::to_string(envelope).expect("an envelope serializes");
        let key = Self::conversation_key(team, &Conversation::Group(group.to_owned()));
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.xadd(&mut pipe, &key, &json, Self::expiry_ms(envelope));
        pipe.cmd("SADD").arg(STREAMS).arg(&key).ignore();
        let (entry,): (String,) = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(entry)
    }

    /// Records that `agent`'s client acked everything up to `entry`.
    pub async fn mark_delivered(
        &self,
        team: &str,
        agent: &str,
        entry: &str,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .advance
            .key(Self::cursor_key(team, agent))
            .arg(entry)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(())
    }

    /// Direct messages `agent` has not acked yet, oldest first, at most `limit`, expired ones
    /// skipped (and counted as delivered so the cursor moves past them).
    pub async fn pending(
        &self,
        team: &str,
        agent: &str,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut conn = self.conn.clone();
        let cursor: Option<String> = redis::cmd("GET")
            .arg(Self::cursor_key(team, agent))
            .query_async(&mut conn)
            .await
            .map_err(StoreError::Unavailable)?;
        // `(` makes the start exclusive: everything after the last acked entry.
        let start = cursor.map_or_else(|| "-".to_owned(), |c| format!("({c}"));
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(Self::inbox_key(team, agent))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::Unavailable)?;
        let now = now_ms();
        let mut pending = Vec::new();
        let mut last_expired = None;
        for id in reply.ids {
            match decode(&id, now)? {
                Some(stored) => pending.push(stored),
                None => last_expired = Some(id.id),
            }
        }
        if pending.is_empty()
            && let Some(entry) = last_expired
        {
            self.mark_delivered(team, agent, &entry).await?;
        }
        Ok(pending)
    }

    /// The newest `limit` messages of a conversation before entry `before` (exclusive), oldest
    /// first; expired ones left out.
    pub async fn history(
        &self,
        team: &str,
        conversation: &Conversation,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Vec<Stored>, StoreError> {
        let end = before.map_or_else(|| "+".to_owned(), |b| format!("({b}"));
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(Self::conversation_key(team, conversation))
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        let now = now_ms();
        let mut messages = Vec::new();
        for id in reply.ids {
            if let Some(stored) = decode(&id, now)? {
                messages.push(stored);
            }
        }
        messages.reverse();
        Ok(messages)
    }

    /// Trims every stream to the retention age (`XTRIM MINID ~`).
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = redis::cmd("SMEMBERS")
            .arg(STREAMS)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::Unavailable)?;
        let oldest = now_ms()
            .saturating_sub(u64::try_from(self.config.retention.as_millis()).unwrap_or(u64::MAX));
        let mut trimmed = 0usize;
        for key in keys {
            let removed: usize = redis::cmd("XTRIM")
                .arg(&key)
                .arg("MINID")
                .arg("~")
                .arg(oldest)
                .query_async(&mut conn)
                .await
                .map_err(StoreError::Unavailable)?;
            trimmed += removed;
        }
        Ok(trimmed)
    }

    /// True when Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(())
    }
}

/// The envelope of a stream entry, or `None` when it has expired.
fn decode(id: &redis::streams::StreamId, now: u64) -> Result<Option<Stored>, StoreError> {
    let exp: u64 = id.get("exp").unwrap_or(0);
    if exp != 0 && exp < now {
        return Ok(None);
    }
    let json: String = id
        .get("m")
        .ok_or_else(|| StoreError::Corrupt(format!("entry {} has no `m`", id.id)))?;
    let envelope = serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("entry {}: {e}", id.id)))?;
    Ok(Some(Stored {
        entry: id.id.clone(),
        envelope,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_numerically() {
        assert!(entry_order("1700000000000-2") < entry_order("1700000000000-10"));
        assert!(entry_order("1700000000001-0") > entry_order("1700000000000-99"));
        assert!(entry_order("1700000000000-10") > entry_order("1700000000000-9"));
    }

    #[test]
    fn direct_conversations_are_one_key_whoever_sends() {
        assert_eq!(
            Store::conversation_key("t", &Conversation::Direct("bob".into(), "alice".into())),
            Store::conversation_key("t", &Conversation::Direct("alice".into(), "bob".into())),
        );
    }
}
