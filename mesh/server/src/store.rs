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

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nsh_mesh_transport::wire::Envelope;
use redis::aio::ConnectionManager;
use redis::{FromRedisValue, ParsingError, Value};

use crate::maps::FastSet;

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

/// A pub/sub message published in an append's transaction: Redis sends it out once the message
/// is stored, and only then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub channel: String,
    pub payload: Vec<u8>,
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

/// A command named `name` with room for `args` arguments (the name included) of `bytes` in
/// all.
fn command(name: &str, args: usize, bytes: usize) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(args, bytes + name.len());
    cmd.arg(name);
    cmd
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
    /// Streams this process listed in `nsh:streams` since the last sweep: each append adds
    /// only the streams missing here, not its streams every time (a command per message).
    /// Cleared by every sweep, so a list Redis lost is written again within a sweep's period.
    listed: Arc<Mutex<FastSet<String>>>,
    /// Whether Redis takes `SET … NX GET`: [`UNKNOWN`], [`ASKING`], [`YES`] or [`NO`].
    set_nx_get: Arc<AtomicU8>,
}

const UNKNOWN: u8 = 0;
const ASKING: u8 = 1;
const YES: u8 = 2;
const NO: u8 = 3;

/// Whether the Redis that wrote `info` (`INFO server`) takes `SET key value NX GET`: 7.0 and
/// later (6.2 has `GET` but not with `NX`). Valkey reports a `redis_version` of 7.2.
fn takes_set_nx_get(info: &str) -> bool {
    info.lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .and_then(|version| version.trim().split('.').next()?.parse::<u32>().ok())
        .is_some_and(|major| major >= 7)
}

/// Past this many listed streams the set starts over: it only saves commands, and a process
/// should not grow with every conversation it has ever seen between two sweeps.
const MAX_LISTED: usize = 65_536;

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
            listed: Arc::default(),
            set_nx_get: Arc::default(),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    // Keys are joined rather than `format!`ted: one allocation of the exact size, and less than
    // half the instructions (a stored message's three keys were 4% of its sending replica's).
    fn inbox_key(team: &str, agent: &str) -> String {
        ["nsh", team, "inbox", agent].join(":")
    }

    fn cursor_key(team: &str, agent: &str) -> String {
        ["nsh", team, "cursor", agent].join(":")
    }

    fn conversation_key(team: &str, conversation: &Conversation) -> String {
        match conversation {
            Conversation::Group(group) => ["nsh", team, "group", group].join(":"),
            Conversation::Direct(a, b) => {
                let (first, second) = if a <= b { (a, b) } else { (b, a) };
                ["nsh", team, "dm", first, second].join(":")
            }
        }
    }

    fn expiry_ms(envelope: &Envelope) -> u64 {
        envelope
            .ttl
            .map_or(0, |ttl| now_ms().saturating_add(ttl.saturating_mul(1000)))
    }

    /// After an append went through (so Redis answers), learns in the background whether this
    /// Redis takes `SET … NX GET`: once, and again after an append that used it failed. Until
    /// then appends use `GET` and `SET NX`; asking first would add a round trip to an append,
    /// and, while Redis is away, a second timeout.
    fn learn_set_nx_get(&self) {
        // A plain load first: on every append with a record, known after the first.
        if self.set_nx_get.load(Ordering::Relaxed) != UNKNOWN
            || self
                .set_nx_get
                .compare_exchange(UNKNOWN, ASKING, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let info: redis::RedisResult<String> = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut store.conn.clone())
                .await;
            let learned = match info {
                Ok(info) if takes_set_nx_get(&info) => YES,
                Ok(_) => NO,
                Err(_) => UNKNOWN,
            };
            store.set_nx_get.store(learned, Ordering::Relaxed);
        });
    }

    /// Appends `envelope` to `streams` (and lists them for the sweep), in one transaction with
    /// its dedup record when there is one, and `publish` when given.
    ///
    /// The record is set only if new (`SET NX`) and the one before it read in the same
    /// transaction (its `GET` option on Redis 7, see [`Self::learn_set_nx_get`]; else a `GET`
    /// first), so one round trip both keeps the message and learns whether its id was kept
    /// before (a Lua script could skip the append then, but costs Redis more per message than
    /// the rare repeat's clean-up below). The one command instead of two took about a
    /// microsecond less of Redis's CPU per stored message (of some 14.5) in the replicas bench.
    async fn append(
        &self,
        streams: &[&str],
        envelope: &Envelope,
        record: Option<&DedupRecord>,
        publish: Option<&Publish>,
    ) -> Result<Appended, StoreError> {
        // serde's text, written without its byte-by-byte escaping (`encoded`).
        let json = envelope.to_json();
        let json = json.as_str();
        let exp = Self::expiry_ms(envelope);
        let set_nx_get = record.is_some() && self.set_nx_get.load(Ordering::Relaxed) == YES;
        // Each command sized up front: grown an argument at a time, their buffers were
        // reallocated about ten times per message (4.3% of a sending replica's instructions).
        let mut pipe = redis::Pipeline::with_capacity(streams.len() + 4);
        pipe.atomic();
        if let Some(record) = record {
            let lifetime = u64::try_from(record.lifetime.as_millis()).unwrap_or(u64::MAX);
            if set_nx_get {
                // One command: sets the record if new and answers the one before it.
                let mut set = command("SET", 7, record.key.len() + record.value.len() + 32);
                set.arg(&record.key)
                    .arg(record.value)
                    .arg("NX")
                    .arg("GET")
                    .arg("PX")
                    .arg(lifetime.max(1));
                pipe.add_command(set);
            } else {
                let mut get = command("GET", 2, record.key.len());
                get.arg(&record.key);
                pipe.add_command(get);
                let mut set = command("SET", 6, record.key.len() + record.value.len() + 32);
                set.arg(&record.key)
                    .arg(record.value)
                    .arg("NX")
                    .arg("PX")
                    .arg(lifetime.max(1));
                pipe.add_command(set).ignore();
            }
        }
        for stream in streams {
            let mut xadd = command("XADD", 10, stream.len() + json.len() + 64);
            xadd.arg(*stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.config.max_len)
                .arg("*")
                .arg("m")
                .arg(json)
                .arg("exp")
                .arg(exp);
            pipe.add_command(xadd);
        }
        if let Some(publish) = publish {
            // A repeat (record already there) is published too: a wake-up for mail that was
            // there already only makes a deliverer look again.
            pipe.cmd("PUBLISH")
                .arg(&publish.channel)
                .arg(&publish.payload)
                .ignore();
        }
        let unlisted = self.unlisted(streams);
        if !unlisted.is_empty() {
            pipe.cmd("SADD").arg(STREAMS).arg(&unlisted).ignore();
        }
        let mut replies: Vec<Value> = match pipe.query_async(&mut self.conn.clone()).await {
            Ok(replies) => replies,
            Err(err) => {
                if set_nx_get {
                    // Perhaps another (older) Redis now: look again before the next append.
                    self.set_nx_get.store(UNKNOWN, Ordering::Relaxed);
                }
                return Err(StoreError::Unavailable(err));
            }
        };
        self.note_listed(&unlisted);
        if record.is_some() {
            self.learn_set_nx_get();
        }
        let corrupt = |e: ParsingError| StoreError::Corrupt(e.to_string());
        let earlier: Option<String> = match record {
            Some(_) if !replies.is_empty() => {
                redis::from_redis_value(replies.remove(0)).map_err(corrupt)?
            }
            _ => None,
        };
        let entries: Vec<String> =
            redis::from_redis_value(Value::Array(replies)).map_err(corrupt)?;
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

    /// Those of `streams` this process has not listed in `nsh:streams` since the last sweep.
    fn unlisted<'a>(&self, streams: &[&'a str]) -> Vec<&'a str> {
        let listed = self.listed.lock().expect("listed streams lock");
        streams
            .iter()
            .copied()
            .filter(|stream| !listed.contains(*stream))
            .collect()
    }

    /// `streams` are in `nsh:streams` now (the append that added them succeeded).
    fn note_listed(&self, streams: &[&str]) {
        if streams.is_empty() {
            return;
        }
        let mut listed = self.listed.lock().expect("listed streams lock");
        if listed.len() + streams.len() > MAX_LISTED {
            listed.clear();
        }
        listed.extend(streams.iter().map(|stream| (*stream).to_owned()));
    }

    /// Appends a direct message to the recipient's inbox and to the conversation, atomically,
    /// with `record` when given: a message whose record existed is taken out again at once
    /// and answered [`Appended::AlreadyRecorded`]. `wake` (the recipient's deliverer's
    /// wake-up, on another replica) is published in the same transaction.
    pub async fn append_direct(
        &self,
        team: &str,
        to: &str,
        envelope: &Envelope,
        record: Option<&DedupRecord>,
        wake: Option<&Publish>,
    ) -> Result<Appended, StoreError> {
        let inbox = Self::inbox_key(team, to);
        let conversation = Self::conversation_key(
            team,
            &Conversation::Direct(envelope.from.clone(), to.to_owned()),
        );
        self.append(&[&inbox, &conversation], envelope, record, wake)
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
        self.append(&[&key], envelope, record, None).await
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
    /// reads up to `limit` direct messages after it, or after `sent` (handed over, not yet
    /// acked) when that is later, oldest first; expired ones are left out and the newest of
    /// them reported. `cursor` is what the caller knew of the cursor; it learns the newest
    /// value here (another replica's deliverer may have moved it).
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
        sent: Option<&str>,
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
        let known = later(cursor.as_deref(), acked);
        let start = later(known, sent);
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
        let (stored_cursor, Entries(entries)): (Option<String>, Entries) = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        if let (Some(acked), Some(stored)) = (acked, &stored_cursor)
            && entry_order(stored) > entry_order(acked)
        {
            self.mark_delivered(team, agent, stored).await?;
        }
        let newest = later(known, stored_cursor.as_deref()).map(ToOwned::to_owned);
        let after = newest.as_deref().map(entry_order);
        *cursor = newest;
        let now = now_ms();
        let mut inbox = Inbox::default();
        for entry in entries {
            // Entries up to the cursor were acked through another replica meanwhile.
            if after.is_some_and(|after| entry_order(&entry.id) <= after) {
                inbox.skipped_acked = true;
                continue;
            }
            if entry.expired(now) {
                inbox.newest_expired = Some(entry.id);
            } else {
                inbox.messages.push(entry.into_stored()?);
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
        let Entries(entries) = redis::cmd("XREVRANGE")
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
        for entry in entries {
            if !entry.expired(now) {
                messages.push(entry.into_stored()?);
            }
        }
        messages.reverse();
        Ok(messages)
    }

    /// Trims every stream to the retention age (`XTRIM MINID ~`).
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        // Appends list their streams again from now on, in case Redis lost the list.
        self.listed.lock().expect("listed streams lock").clear();
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

/// The entries of an `XRANGE` or `XREVRANGE` reply, read straight from Redis's answer.
/// redis-rs's `StreamRangeReply` builds two hash maps per entry and copies a field's value to
/// read it: about 4% of a receiving replica's instructions with persistence on (callgrind).
struct Entries(Vec<Entry>);

/// One stream entry: its id and the two fields every append writes.
#[derive(Debug)]
struct Entry {
    id: String,
    /// `m`, the envelope's JSON (`None`: the entry has no `m`, which no append writes).
    message: Option<Vec<u8>>,
    /// `exp`, in Unix milliseconds; 0 for none.
    expiry_ms: u64,
}

impl FromRedisValue for Entries {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        match value {
            Value::Nil => Ok(Self(Vec::new())),
            Value::Array(rows) => rows
                .into_iter()
                .map(Entry::from_row)
                .collect::<Result<_, _>>()
                .map(Self),
            other => Err(ParsingError::from(format!(
                "a stream range is an array of entries, got {other:?}"
            ))),
        }
    }
}

impl Entry {
    /// `[id, [field, value, ...]]` (RESP3 may give the fields as a map).
    fn from_row(row: Value) -> Result<Self, ParsingError> {
        let Value::Array(row) = row else {
            return Err(ParsingError::from(format!(
                "a stream entry is [id, fields], got {row:?}"
            )));
        };
        let mut row = row.into_iter();
        let id: String = redis::from_redis_value(row.next().unwrap_or(Value::Nil))?;
        let pairs: Vec<(Value, Value)> = match row.next() {
            Some(Value::Array(flat)) => {
                let mut flat = flat.into_iter();
                std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
            }
            Some(Value::Map(pairs)) => pairs,
            Some(Value::Nil) | None => Vec::new(),
            Some(other) => {
                return Err(ParsingError::from(format!(
                    "entry {id}: fields are an array, got {other:?}"
                )));
            }
        };
        let mut entry = Self {
            id,
            message: None,
            expiry_ms: 0,
        };
        for (field, value) in pairs {
            match field {
                Value::BulkString(name) if name == b"m" => {
                    entry.message = Some(redis::from_redis_value(value)?);
                }
                Value::BulkString(name) if name == b"exp" => {
                    entry.expiry_ms = redis::from_redis_value(value)?;
                }
                _ => {}
            }
        }
        Ok(entry)
    }

    /// Past its expiry at `now` (Unix ms): never delivered, left out of history.
    fn expired(&self, now: u64) -> bool {
        self.expiry_ms != 0 && self.expiry_ms < now
    }

    /// The stored message.
    fn into_stored(self) -> Result<Stored, StoreError> {
        let Some(json) = self.message else {
            return Err(StoreError::Corrupt(format!("entry {} has no `m`", self.id)));
        };
        let envelope = serde_json::from_slice(&json)
            .map_err(|e| StoreError::Corrupt(format!("entry {}: {e}", self.id)))?;
        Ok(Stored {
            entry: self.id,
            envelope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_nx_get_is_used_from_redis_7() {
        let info = |version: &str| {
            format!("# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n")
        };
        assert!(takes_set_nx_get(&info("7.0.15")));
        assert!(takes_set_nx_get(&info("8.2.1")));
        // Valkey answers with the Redis version it is compatible with.
        assert!(takes_set_nx_get(&info("7.2.4")));
        assert!(
            !takes_set_nx_get(&info("6.2.14")),
            "6.2 refuses NX with GET"
        );
        assert!(!takes_set_nx_get(&info("garbled")));
        assert!(!takes_set_nx_get(""));
    }

    fn test_store(redis: &nsh_testenv::RedisServer) -> Store {
        Store::new(StoreConfig {
            url: redis.url(),
            retention: Duration::from_secs(3600),
            max_len: 100,
        })
        .unwrap()
    }

    /// Message `m1` from alice to `to`, and its dedup record.
    fn message_and_record(to: &str) -> (Envelope, DedupRecord) {
        let envelope = Envelope {
            id: "m1".to_owned(),
            kind: nsh_mesh_transport::wire::MessageKind::Direct,
            from: "alice".to_owned(),
            to: Some(to.to_owned()),
            group: None,
            text: "hello".to_owned(),
            metadata: None,
            timestamp: "2026-12-05T00:00:00Z".to_owned(),
            ttl: None,
        };
        let record = DedupRecord {
            key: format!("nsh:alpha:seen:alice:m1:{to}"),
            value: "done",
            lifetime: Duration::from_secs(60),
        };
        (envelope, record)
    }

    /// Both forms of the dedup record, against a real Redis: the first append keeps the
    /// message, the repeat is answered from the record and leaves one entry.
    #[tokio::test]
    async fn a_repeat_is_answered_from_its_record_with_either_form_of_the_set() {
        let redis = nsh_testenv::RedisServer::start().unwrap();
        for form in [YES, NO] {
            let store = test_store(&redis);
            store.set_nx_get.store(form, Ordering::Relaxed);
            let to = format!("bob{form}");
            let (envelope, record) = message_and_record(&to);
            let first = store
                .append_direct("alpha", &to, &envelope, Some(&record), None)
                .await
                .unwrap();
            assert!(matches!(first, Appended::Entry(_)), "{first:?}");
            let again = store
                .append_direct("alpha", &to, &envelope, Some(&record), None)
                .await
                .unwrap();
            assert_eq!(again, Appended::AlreadyRecorded("done".to_owned()));
            let kept: usize = redis::cmd("XLEN")
                .arg(Store::inbox_key("alpha", &to))
                .query_async(&mut store.conn.clone())
                .await
                .unwrap();
            assert_eq!(kept, 1, "the repeat was taken out again (form {form})");
        }
    }

    #[tokio::test]
    async fn a_store_learns_after_its_first_append_that_redis_7_takes_set_nx_get() {
        let redis = nsh_testenv::RedisServer::start().unwrap();
        let store = test_store(&redis);
        assert_eq!(store.set_nx_get.load(Ordering::Relaxed), UNKNOWN);
        let (envelope, record) = message_and_record("bob");
        store
            .append_direct("alpha", "bob", &envelope, Some(&record), None)
            .await
            .unwrap();
        // Debian's redis-server here is 7.0: the answer comes from `INFO server`.
        for _ in 0..200 {
            if store.set_nx_get.load(Ordering::Relaxed) == YES {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "still {} after 2 s",
            store.set_nx_get.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn entry_ids_order_numerically() {
        assert!(entry_order("1700000000000-2") < entry_order("1700000000000-10"));
        assert!(entry_order("1700000000001-0") > entry_order("1700000000000-99"));
        assert!(entry_order("1700000000000-10") > entry_order("1700000000000-9"));
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    const ENVELOPE: &str = r#"{"id":"m1","type":"direct","from":"alice","to":"bob","text":"hi","timestamp":"2026-12-04T00:00:00Z"}"#;

    #[test]
    fn entries_read_id_message_and_expiry_in_either_field_shape() {
        let flat = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("m"), bulk(ENVELOPE), bulk("exp"), bulk("0")]),
        ]);
        let map = Value::Array(vec![
            bulk("2-0"),
            Value::Map(vec![
                (bulk("exp"), bulk("1700")),
                (bulk("m"), bulk(ENVELOPE)),
            ]),
        ]);
        let Entries(entries) = Entries::from_redis_value(Value::Array(vec![flat, map])).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].id.as_str(), entries[0].expiry_ms), ("1-0", 0));
        assert_eq!(
            (entries[1].id.as_str(), entries[1].expiry_ms),
            ("2-0", 1700)
        );
        assert_eq!(entries[1].message.as_deref(), Some(ENVELOPE.as_bytes()));
        let Entries(none) = Entries::from_redis_value(Value::Nil).unwrap();
        assert!(none.is_empty());
        assert!(Entries::from_redis_value(bulk("not entries")).is_err());
        // An entry without fields reads, and is found to have no message when decoded.
        let Entries(bare) =
            Entries::from_redis_value(Value::Array(vec![Value::Array(vec![bulk("3-0")])])).unwrap();
        assert_eq!(
            (bare[0].id.as_str(), bare[0].message.as_ref()),
            ("3-0", None)
        );
        assert!(Entries::from_redis_value(Value::Array(vec![bulk("1-0")])).is_err());
        assert!(Entries::from_redis_value(Value::Array(vec![Value::Int(1)])).is_err());
    }

    #[test]
    fn an_entry_reads_as_its_envelope_and_expires_after_its_expiry() {
        let entry = |message: Option<&str>, expiry_ms| Entry {
            id: "5-1".to_owned(),
            message: message.map(|m| m.as_bytes().to_vec()),
            expiry_ms,
        };
        let stored = entry(Some(ENVELOPE), 0).into_stored().unwrap();
        assert_eq!(stored.entry, "5-1");
        assert_eq!(
            (stored.envelope.id.as_str(), stored.envelope.text.as_str()),
            ("m1", "hi")
        );
        assert!(!entry(Some(ENVELOPE), 0).expired(u64::MAX));
        assert!(!entry(Some(ENVELOPE), 2_000).expired(1_000));
        assert!(entry(Some(ENVELOPE), 999).expired(1_000));
        let corrupt = |entry: Entry| match entry.into_stored() {
            Err(StoreError::Corrupt(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(corrupt(entry(None, 0)).contains("no `m`"));
        assert!(corrupt(entry(Some("{"), 0)).starts_with("entry 5-1: "));
    }

    #[test]
    fn direct_conversations_are_one_key_whoever_sends() {
        assert_eq!(
            Store::conversation_key("t", &Conversation::Direct("bob".into(), "alice".into())),
            Store::conversation_key("t", &Conversation::Direct("alice".into(), "bob".into())),
        );
    }
}
