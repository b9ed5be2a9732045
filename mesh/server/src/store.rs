//! The message store (persistence on): Redis Streams.
//!
//! Keys, all under the `nsh:` prefix and scoped by team:
//! - `nsh:{team}:inbox:{agent}`: every direct message to the agent, in order;
//!   `nsh:{team}:cursor:{agent}` is the last entry its client acked, so a reconnect resumes
//!   right after it (and only moves forward, whichever replica writes it);
//! - `nsh:{team}:dm:{a}:{b}` (names sorted) and `nsh:{team}:group:{group}`: the conversations,
//!   for `history`;
//! - `nsh:streams`: every stream key, for the retention sweep;
//! - with several replicas, a message id's dedup record (its key and value are the cluster's,
//!   [`DedupRecord`]), written in the same transaction as the message it stands for.
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

/// A message id's record in the replicas' shared dedup, written with the message (see
/// [`Store::append_direct`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupRecord {
    pub key: String,
    /// What the record says once the message is kept.
    pub value: &'static str,
    pub lifetime: Duration,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Kept; the entry id in the recipient's inbox (direct) or the group's stream.
    Entry(String),
    /// Not kept again: the message id's dedup record already existed, with this value.
    AlreadyRecorded(String),
}

/// A read of an inbox: the messages to deliver, and the newest expired entry skipped (the
/// cursor may move past it once nothing before it is waiting).
#[derive(Debug, Default)]
pub struct Inbox {
    pub messages: Vec<Stored>,
    pub newest_expired: Option<String>,
    /// Entries were read that another replica's deliverer had already handed over: there may
    /// be more to read at once.
    pub skipped_acked: bool,
}

/// The later of two entry ids.
fn later<'a>(a: Option<&'a str>, b: Option<&'a str>) -> Option<&'a str> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if entry_order(a) >= entry_order(b) {
            a
        } else {
            b
        }),
        (a, b) => a.or(b),
    }
}

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

    /// Appends `envelope` to `streams` (and lists them for the sweep), in one transaction with
    /// its dedup record when there is one.
    ///
    /// The record is set only if new (`SET NX`) and read first in the same transaction, so
    /// one round trip both keeps the message and learns whether its id was kept before (a
    /// Lua script could skip the append then, but costs Redis more per message than the
    /// rare repeat's clean-up below).
    async fn append(
        &self,
        streams: &[&str],
        envelope: &Envelope,
        record: Option<&DedupRecord>,
    ) -> Result<Appended, StoreError> {
        let json = serde_json::to_string(envelope).expect("an envelope serializes");
        let exp = Self::expiry_ms(envelope);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(record) = record {
            let lifetime = u64::try_from(record.lifetime.as_millis()).unwrap_or(u64::MAX);
            pipe.get(&record.key);
            pipe.cmd("SET")
                .arg(&record.key)
                .arg(record.value)
                .arg("NX")
                .arg("PX")
                .arg(lifetime.max(1))
                .ignore();
        }
        for stream in streams {
            pipe.cmd("XADD")
                .arg(*stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.config.max_len)
                .arg("*")
                .arg("m")
                .arg(&json)
                .arg("exp")
                .arg(exp);
        }
        pipe.cmd("SADD").arg(STREAMS).arg(streams).ignore();
        let mut replies: Vec<redis::Value> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        let corrupt = |e: redis::ParsingError| StoreError::Corrupt(e.to_string());
        let earlier: Option<String> = match record {
            Some(_) if !replies.is_empty() => {
                redis::from_redis_value(replies.remove(0)).map_err(corrupt)?
            }
            _ => None,
        };
        let entries: Vec<String> =
            redis::from_redis_value(redis::Value::Array(replies)).map_err(corrupt)?;
        if let Some(earlier) = earlier {
            // Kept before: take back the copy just appended. Until then a deliverer may hand
            // it over again, which the recipient's client drops as a repeat.
            let mut undo = redis::pipe();
            for (stream, entry) in streams.iter().zip(&entries) {
                undo.cmd("XDEL").arg(*stream).arg(entry).ignore();
            }
            if let Err(err) = undo.query_async::<()>(&mut self.conn.clone()).await {
                tracing::warn!(%err, "could not remove a repeated message from its streams");
            }
            return Ok(Appended::AlreadyRecorded(earlier));
        }
        entries
            .into_iter()
            .next()
            .map(Appended::Entry)
            .ok_or_else(|| StoreError::Corrupt("XADD answered no entry id".to_owned()))
    }

    /// Appends a direct message to the recipient's inbox and to the conversation, atomically,
    /// with `record` when given: a message whose record existed is taken out again at once
    /// and answered [`Appended::AlreadyRecorded`].
    pub async fn append_direct(
        &self,
        team: &str,
        to: &str,
        envelope: &Envelope,
        record: Option<&DedupRecord>,
    ) -> Result<Appended, StoreError> {
        let inbox = Self::inbox_key(team, to);
        let conversation = Self::conversation_key(
            team,
            &Conversation::Direct(envelope.from.clone(), to.to_owned()),
        );
        self.append(&[&inbox, &conversation], envelope, record)
            .await
    }

    /// Appends a group message to the group's conversation (with `record` as for
    /// [`append_direct`](Self::append_direct)).
    pub async fn append_group(
        &self,
        team: &str,
        group: &str,
        envelope: &Envelope,
        record: Option<&DedupRecord>,
    ) -> Result<Appended, StoreError> {
        let key = Self::conversation_key(team, &Conversation::Group(group.to_owned()));
        self.append(&[&key], envelope, record).await
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

    /// The deliverer's round trip: records `acked` (when given) as `agent`'s cursor, then
    /// reads up to `limit` direct messages after it, oldest first; expired ones are left out
    /// and the newest of them reported. `cursor` is what the caller knew of the cursor; it
    /// learns the newest value here (another replica's deliverer may have moved it).
    ///
    /// One transaction (read the cursor, write it, read the range) instead of three round
    /// trips. The cursor only moves forward: a write that turns out to have moved it back
    /// (the same agent acking through two replicas at once) is undone at once.
    pub async fn advance_and_read(
        &self,
        team: &str,
        agent: &str,
        cursor: &mut Option<String>,
        acked: Option<&str>,
        limit: usize,
    ) -> Result<Inbox, StoreError> {
        let cursor_key = Self::cursor_key(team, agent);
        if cursor.is_none() && acked.is_none() {
            // A new deliverer: start at the stored cursor, not at the inbox's oldest entries
            // (`0-0`, before every entry, when nothing was acked yet).
            let stored: Option<String> = redis::cmd("GET")
                .arg(&cursor_key)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(StoreError::Unavailable)?;
            *cursor = Some(stored.unwrap_or_else(|| "0-0".to_owned()));
        }
        let start = later(cursor.as_deref(), acked);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.get(&cursor_key);
        if let Some(acked) = acked {
            pipe.set(&cursor_key, acked).ignore();
        }
        // `(` makes the start exclusive: everything after the last acked entry.
        pipe.cmd("XRANGE")
            .arg(Self::inbox_key(team, agent))
            .arg(start.map_or_else(|| "-".to_owned(), |c| format!("({c}")))
            .arg("+")
            .arg("COUNT")
            .arg(limit);
        let (stored_cursor, reply): (Option<String>, StreamRangeReply) = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        if let (Some(acked), Some(stored)) = (acked, &stored_cursor)
            && entry_order(stored) > entry_order(acked)
        {
            self.mark_delivered(team, agent, stored).await?;
        }
        let newest = later(start, stored_cursor.as_deref()).map(ToOwned::to_owned);
        let after = newest.as_deref().map(entry_order);
        *cursor = newest;
        let now = now_ms();
        let mut inbox = Inbox::default();
        for id in reply.ids {
            // Entries up to the cursor were acked through another replica meanwhile.
            if after.is_some_and(|after| entry_order(&id.id) <= after) {
                inbox.skipped_acked = true;
                continue;
            }
            match decode(&id, now)? {
                Some(stored) => inbox.messages.push(stored),
                None => inbox.newest_expired = Some(id.id),
            }
        }
        Ok(inbox)
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
