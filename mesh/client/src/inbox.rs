//! The agent's inbox on disk: `<dir>/<agent>.jsonl`, one JSON line per received message.
//!
//! Several processes share it: the mesh-client appends and reads, `nsh mesh hook` reads. What
//! has been delivered into the conversation is recorded in `<agent>.cursor`: a byte offset
//! before which every line is delivered, plus the ids delivered out of order after it (the
//! `mesh_inbox` tool can take only one sender's messages). Every read-modify-write holds an
//! exclusive lock on `<agent>.lock`, and the cursor is replaced atomically, so a reader killed
//! at any point either committed its delivery or will deliver again: nothing is lost.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use nsh_mesh_transport::wire::Envelope;
use serde::{Deserialize, Serialize};

/// One line of the inbox file: the envelope as the mesh sent it, and when it arrived here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxEntry {
    #[serde(flatten)]
    pub message: Envelope,
    pub received_at: String,
}

impl InboxEntry {
    pub fn received_now(message: Envelope) -> Self {
        Self {
            message,
            received_at: nsh_mesh_transport::wire::now_rfc3339(),
        }
    }

    /// True when the message's `ttl` has run out: such messages are never delivered.
    pub fn expired(&self, now: time::OffsetDateTime) -> bool {
        let Some(ttl) = self.message.ttl else {
            return false;
        };
        let Ok(sent) = time::OffsetDateTime::parse(
            &self.message.timestamp,
            &time::format_description::well_known::Rfc3339,
        ) else {
            return false;
        };
        sent + time::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX)) < now
    }
}

/// Which unread messages to take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub from: Option<String>,
    pub group: Option<String>,
}

impl Filter {
    fn matches(&self, entry: &InboxEntry) -> bool {
        self.from.as_ref().is_none_or(|f| *f == entry.message.from)
            && self
                .group
                .as_ref()
                .is_none_or(|g| entry.message.group.as_ref() == Some(g))
    }
}

/// Unread messages, oldest first, and how many more matched than were taken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unread {
    pub messages: Vec<InboxEntry>,
    pub remaining: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("inbox {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("inbox cursor {path} is corrupt ({why}); delete it to re-deliver the whole inbox")]
    Cursor { path: PathBuf, why: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    /// Every complete line before this byte offset is delivered.
    offset: u64,
    /// Ids of messages after `offset` that were delivered out of order.
    #[serde(default)]
    read: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct Inbox {
    dir: PathBuf,
    agent: String,
}

impl Inbox {
    /// The inbox of `agent` in `dir`, which is created (private to the user) when missing.
    pub fn open(dir: impl Into<PathBuf>, agent: impl Into<String>) -> Result<Self, InboxError> {
        let inbox = Self {
            dir: dir.into(),
            agent: agent.into(),
        };
        if !inbox.dir.exists() {
            fs::create_dir_all(&inbox.dir).map_err(|source| inbox.io(&inbox.dir, source))?;
            use std::os::unix::fs::PermissionsExt as _;
            let _ = fs::set_permissions(&inbox.dir, fs::Permissions::from_mode(0o700));
        }
        Ok(inbox)
    }

    /// Every inbox in `dir` (one per `*.jsonl` file), for a hook that was not told the agent.
    pub fn all_in(dir: &Path) -> Result<Vec<Self>, InboxError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(InboxError::Io {
                    path: dir.to_owned(),
                    source,
                });
            }
        };
        let mut agents: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".jsonl").map(str::to_owned)
            })
            .collect();
        agents.sort();
        Ok(agents
            .into_iter()
            .map(|agent| Self {
                dir: dir.to_owned(),
                agent,
            })
            .collect())
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.jsonl", self.agent))
    }

    pub fn trigger_path(&self) -> PathBuf {
        self.dir.join(format!("{}.trigger", self.agent))
    }

    fn cursor_path(&self) -> PathBuf {
        self.dir.join(format!("{}.cursor", self.agent))
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.agent))
    }

    fn io(&self, path: &Path, source: std::io::Error) -> InboxError {
        InboxError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Holds the inbox's exclusive lock until dropped (released by the OS if the process dies).
    fn lock(&self) -> Result<File, InboxError> {
        let path = self.lock_path();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io(&path, e))?;
        file.lock().map_err(|e| self.io(&path, e))?;
        Ok(file)
    }

    /// Appends `entry` as one line and touches the trigger file. Returns once the line is on
    /// disk, so the caller may then ack the message to the mesh.
    pub fn append(&self, entry: &InboxEntry) -> Result<(), InboxError> {
        let mut line = serde_json::to_vec(entry).expect("an inbox entry serializes");
        line.push(b'\n');
        let path = self.log_path();
        let _lock = self.lock()?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| self.io(&path, e))?;
        // A crash in an earlier append may have left a half line: end it, so it stays one
        // unparsable line that readers skip instead of corrupting this one.
        let len = file.metadata().map_err(|e| self.io(&path, e))?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(|e| self.io(&path, e))?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        // One write of the whole line with O_APPEND: other appenders cannot interleave.
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| self.io(&path, e))?;
        let trigger = self.trigger_path();
        fs::write(&trigger, entry.received_at.as_bytes()).map_err(|e| self.io(&trigger, e))?;
        Ok(())
    }

    /// Unread messages matching `filter`, oldest first, at most `limit`; marks nothing read.
    pub fn unread(&self, filter: &Filter, limit: usize) -> Result<Unread, InboxError> {
        let _lock = self.lock()?;
        let cursor = self.load_cursor()?;
        let now = time::OffsetDateTime::now_utc();
        let mut unread = Unread::default();
        for line in self.lines_from(cursor.offset)? {
            let Some(entry) = line.entry else { continue };
            if cursor.read.contains(&entry.message.id)
                || entry.expired(now)
                || !filter.matches(&entry)
            {
                continue;
            }
            if unread.messages.len() < limit {
                unread.messages.push(entry);
            } else {
                unread.remaining += 1;
            }
        }
        Ok(unread)
    }

    /// Records `ids` as delivered, then moves the offset past every delivered (or expired, or
    /// unparsable) line at the front so the cursor stays small.
    pub fn mark_read<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Result<(), InboxError> {
        let _lock = self.lock()?;
        let mut cursor = self.load_cursor()?;
        cursor.read.extend(ids.into_iter().map(str::to_owned));
        let now = time::OffsetDateTime::now_utc();
        for line in self.lines_from(cursor.offset)? {
            let done = match &line.entry {
                None => true,
                Some(entry) => cursor.read.remove(&entry.message.id) || entry.expired(now),
            };
            if !done {
                break;
            }
            cursor.offset = line.end;
        }
        self.save_cursor(&cursor)
    }

    /// Ids of the last `count` messages, to recognise a message the mesh sends twice.
    pub fn recent_ids(&self, count: usize) -> Result<HashSet<String>, InboxError> {
        let _lock = self.lock()?;
        let lines = self.lines_from(0)?;
        Ok(lines
            .into_iter()
            .rev()
            .filter_map(|l| l.entry)
            .take(count)
            .map(|e| e.message.id)
            .collect())
    }

    fn lines_from(&self, offset: u64) -> Result<Vec<Line>, InboxError> {
        let path = self.log_path();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(self.io(&path, source)),
        };
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| self.io(&path, e))?;
        let mut lines = Vec::new();
        let mut start = 0usize;
        // A last chunk without its newline is an append in progress (or cut short): not yet a
        // line.
        while let Some(len) = bytes[start..].iter().position(|b| *b == b'\n') {
            let raw = &bytes[start..start + len];
            let entry = match serde_json::from_slice::<InboxEntry>(raw) {
                Ok(entry) => Some(entry),
                Err(err) => {
                    if !raw.iter().all(u8::is_ascii_whitespace) {
                        tracing::warn!(path = %path.display(), %err, "skipping an unreadable inbox line");
                    }
                    None
                }
            };
            start += len + 1;
            lines.push(Line {
                entry,
                end: offset + start as u64,
            });
        }
        Ok(lines)
    }

    fn load_cursor(&self) -> Result<Cursor, InboxError> {
        let path = self.cursor_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| InboxError::Cursor {
                path,
                why: e.to_string(),
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Cursor::default()),
            Err(source) => Err(self.io(&path, source)),
        }
    }

    fn save_cursor(&self, cursor: &Cursor) -> Result<(), InboxError> {
        let path = self.cursor_path();
        let bytes = serde_json::to_vec(cursor).expect("a cursor serializes");
        nsh_config_files::write_atomic(&path, &bytes).map_err(|e| match e {
            nsh_config_files::EditError::Write { path, source }
            | nsh_config_files::EditError::Read { path, source } => InboxError::Io { path, source },
            other => InboxError::Io {
                path,
                source: std::io::Error::other(other.to_string()),
            },
        })
    }
}

struct Line {
    entry: Option<InboxEntry>,
    /// Byte offset just past this line's newline.
    end: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use nsh_mesh_transport::wire::MessageKind;

    use super::*;

    pub(crate) fn message(id: &str, from: &str, group: Option<&str>) -> InboxEntry {
        InboxEntry::received_now(Envelope {
            id: id.into(),
            kind: if group.is_some() {
                MessageKind::Group
            } else {
                MessageKind::Direct
            },
            from: from.into(),
            to: group.is_none().then(|| "me".into()),
            group: group.map(Into::into),
            text: format!("text of {id}"),
            metadata: None,
            timestamp: nsh_mesh_transport::wire::now_rfc3339(),
            ttl: None,
        })
    }

    fn ids(unread: &Unread) -> Vec<&str> {
        unread
            .messages
            .iter()
            .map(|m| m.message.id.as_str())
            .collect()
    }

    #[test]
    fn filtered_reads_leave_the_rest_unread_and_the_cursor_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), "me").unwrap();
        inbox.append(&message("1", "bob", None)).unwrap();
        inbox.append(&message("2", "carol", Some("ops"))).unwrap();
        inbox.append(&message("3", "bob", None)).unwrap();
        assert!(inbox.trigger_path().exists());

        let from_carol = Filter {
            from: Some("carol".into()),
            group: None,
        };
        let taken = inbox.unread(&from_carol, 10).unwrap();
        assert_eq!(ids(&taken), ["2"]);
        inbox.mark_read(["2"]).unwrap();

        let rest = inbox.unread(&Filter::default(), 1).unwrap();
        assert_eq!((ids(&rest), rest.remaining), (vec!["1"], 1));
        inbox.mark_read(["1"]).unwrap();
        // "1" and "2" are read: the offset moved past both and the id set is empty again.
        let cursor = inbox.load_cursor().unwrap();
        assert!(cursor.read.is_empty());
        assert_eq!(ids(&inbox.unread(&Filter::default(), 10).unwrap()), ["3"]);
    }

    #[test]
    fn a_half_written_line_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), "me").unwrap();
        inbox.append(&message("1", "bob", None)).unwrap();
        // A crash in the middle of an append.
        let mut file = OpenOptions::new()
            .append(true)
            .open(inbox.log_path())
            .unwrap();
        file.write_all(br#"{"id":"2","type":"dir"#).unwrap();
        assert_eq!(ids(&inbox.unread(&Filter::default(), 10).unwrap()), ["1"]);
        inbox.append(&message("3", "bob", None)).unwrap();
        assert_eq!(
            ids(&inbox.unread(&Filter::default(), 10).unwrap()),
            ["1", "3"]
        );
        inbox.mark_read(["1", "3"]).unwrap();
        let cursor = inbox.load_cursor().unwrap();
        assert_eq!(cursor.offset, fs::metadata(inbox.log_path()).unwrap().len());
    }

    #[test]
    fn expired_messages_are_never_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), "me").unwrap();
        let mut old = message("old", "bob", None);
        old.message.timestamp = "2020-01-01T00:00:00.000Z".into();
        old.message.ttl = Some(60);
        inbox.append(&old).unwrap();
        inbox.append(&message("new", "bob", None)).unwrap();
        assert_eq!(ids(&inbox.unread(&Filter::default(), 10).unwrap()), ["new"]);
    }

    #[test]
    fn every_inbox_in_a_directory_is_found() {
        let dir = tempfile::tempdir().unwrap();
        Inbox::open(dir.path(), "b")
            .unwrap()
            .append(&message("1", "x", None))
            .unwrap();
        Inbox::open(dir.path(), "a")
            .unwrap()
            .append(&message("1", "x", None))
            .unwrap();
        let agents: Vec<String> = Inbox::all_in(dir.path())
            .unwrap()
            .iter()
            .map(|i| i.agent().to_owned())
            .collect();
        assert_eq!(agents, ["a", "b"]);
        assert!(
            Inbox::all_in(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }
}
