//! The agent's inbox on disk: `<dir>/<team>/<agent>.jsonl`, one JSON line per received message.
//!
//! Several processes share it: the mesh-client appends and reads, `nsh mesh hook` reads. What
//! has been delivered into the conversation is recorded in `<agent>.cursor`: a byte offset
//! before which every line is delivered, plus the ids delivered out of order after it (the
//! `mesh_inbox` tool can take only one sender's messages). Every read-modify-write holds an
//! exclusive lock on `<agent>.lock`, and the cursor is replaced atomically, so a reader killed
//! at any point either committed its delivery or will deliver again: nothing is lost.
//!
//! The file stays bounded ([`InboxLimits`]): once the delivered prefix passes
//! `compact_after_bytes`, it is rewritten without the delivered lines (keeping the newest
//! `keep_read_bytes` of them, younger than `keep_read_age`, so a restarted client still knows
//! their ids); and a message that would take the undelivered part past `max_unread_bytes` is
//! refused, so it is not acked and stays with the sender (or the mesh's store). Reads stream
//! from the cursor and start-up reads only the file's tail: a large inbox costs no memory.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// How large an inbox may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    /// Undelivered bytes at most; a message past this is refused (and so not acked).
    pub max_unread_bytes: u64,
    /// Compact once the delivered prefix is this large.
    pub compact_after_bytes: u64,
    /// Delivered lines kept by a compaction (the newest), to recognise repeats after a restart.
    pub keep_read_bytes: u64,
    /// Delivered lines older than this are dropped by a compaction whatever their size.
    pub keep_read_age: Duration,
}

impl Default for InboxLimits {
    fn default() -> Self {
        Self {
            max_unread_bytes: 32 << 20,
            compact_after_bytes: 4 << 20,
            keep_read_bytes: 1 << 20,
            keep_read_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// How much of the file's end start-up reads to learn recent message ids.
const RECENT_TAIL_BYTES: u64 = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("inbox: agent name `{name}` {why}; refusing to use it in a file name")]
    BadName { name: String, why: &'static str },
    #[error(
        "inbox {path} is full ({unread} undelivered bytes, limit {limit}): the message is not acked and stays with the sender; read mail with mesh_inbox or raise --inbox-max-unread-bytes"
    )]
    Full {
        path: PathBuf,
        unread: u64,
        limit: u64,
    },
    #[error("inbox {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "inbox {path} is from before inboxes were kept per team and holds undelivered mail of an unknown team; if it is team `{team}`'s, move it: `mv {path} {new_dir}/` (and `{agent}.cursor` beside it, if any); otherwise read it and delete it"
    )]
    Legacy {
        path: PathBuf,
        team: String,
        new_dir: PathBuf,
        agent: String,
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
    /// `<root>/<team>`: the folder of this inbox's files.
    dir: PathBuf,
    team: String,
    agent: String,
    limits: InboxLimits,
}

impl Inbox {
    /// The inbox of `agent` of `team` under `root` (`<root>/<team>/<agent>.jsonl`), whose folders
    /// are created (private to the user) when missing. Keying by team keeps two teams' agents
    /// of the same name apart. Both names must be valid names: they become parts of paths, and
    /// a token's claims are not trusted to be (the server refuses such tokens; the client
    /// checks first).
    pub fn open(
        root: impl Into<PathBuf>,
        team: impl Into<String>,
        agent: impl Into<String>,
    ) -> Result<Self, InboxError> {
        let (root, team, agent) = (root.into(), team.into(), agent.into());
        for name in [&team, &agent] {
            if let Some(why) = nsh_contract::names::check(name) {
                return Err(InboxError::BadName {
                    name: nsh_mesh_transport::display::shown(name),
                    why,
                });
            }
        }
        let inbox = Self {
            dir: root.join(&team),
            team,
            agent,
            limits: InboxLimits::default(),
        };
        inbox.refuse_undelivered_legacy_mail(&root)?;
        for dir in [&root, &inbox.dir] {
            if !dir.exists() {
                fs::create_dir_all(dir).map_err(|source| inbox.io(dir, source))?;
                use std::os::unix::fs::PermissionsExt as _;
                let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
            }
        }
        Ok(inbox)
    }

    /// Inboxes of the old layout (`<root>/<agent>.jsonl`, no team) may hold mail of any team
    /// that had an agent of this name. Undelivered mail there is neither delivered as this
    /// team's nor silently dropped: the user decides. Fully delivered ones are ignored.
    fn refuse_undelivered_legacy_mail(&self, root: &Path) -> Result<(), InboxError> {
        let legacy = Self {
            dir: root.to_owned(),
            team: String::new(),
            agent: self.agent.clone(),
            limits: self.limits,
        };
        let path = legacy.log_path();
        if !path.exists() || legacy.unread(&Filter::default(), 1)?.messages.is_empty() {
            return Ok(());
        }
        Err(InboxError::Legacy {
            path,
            team: self.team.clone(),
            new_dir: self.dir.clone(),
            agent: self.agent.clone(),
        })
    }

    /// Every inbox under `root` (one per `<team>/<agent>.jsonl`), team by team, for a hook that
    /// was not told whose mail it delivers.
    pub fn all_in(root: &Path) -> Result<Vec<Self>, InboxError> {
        let mut inboxes = Vec::new();
        for team in valid_names(root, fs::FileType::is_dir, "")? {
            let dir = root.join(&team);
            for agent in valid_names(&dir, fs::FileType::is_file, ".jsonl")? {
                inboxes.push(Self {
                    dir: dir.clone(),
                    team: team.clone(),
                    agent,
                    limits: InboxLimits::default(),
                });
            }
        }
        Ok(inboxes)
    }

    pub fn team(&self) -> &str {
        &self.team
    }

    /// This inbox with other size limits.
    #[must_use]
    pub fn with_limits(mut self, limits: InboxLimits) -> Self {
        self.limits = limits;
        self
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
        let unread = len.saturating_sub(self.load_cursor()?.offset);
        if unread + line.len() as u64 > self.limits.max_unread_bytes {
            return Err(InboxError::Full {
                path,
                unread,
                limit: self.limits.max_unread_bytes,
            });
        }
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
        self.for_each_line(cursor.offset, |line| {
            if let Some(entry) = line.entry
                && !cursor.read.contains(&entry.message.id)
                && !entry.expired(now)
                && filter.matches(&entry)
            {
                if unread.messages.len() < limit {
                    unread.messages.push(entry);
                } else {
                    unread.remaining += 1;
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(unread)
    }

    /// The message with `id`, delivered or not (while the file still holds it).
    pub fn find(&self, id: &str) -> Result<Option<InboxEntry>, InboxError> {
        let _lock = self.lock()?;
        let mut found = None;
        self.for_each_line(0, |line| match line.entry {
            Some(entry) if entry.message.id == id => {
                found = Some(entry);
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        })?;
        Ok(found)
    }

    /// Records `ids` as delivered, then moves the offset past every delivered (or expired, or
    /// unparsable) line at the front so the cursor stays small.
    pub fn mark_read<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Result<(), InboxError> {
        let _lock = self.lock()?;
        let mut cursor = self.load_cursor()?;
        cursor.read.extend(ids.into_iter().map(str::to_owned));
        let now = time::OffsetDateTime::now_utc();
        let mut offset = cursor.offset;
        self.for_each_line(cursor.offset, |line| {
            let done = match &line.entry {
                None => true,
                Some(entry) => cursor.read.remove(&entry.message.id) || entry.expired(now),
            };
            if !done {
                return ControlFlow::Break(());
            }
            offset = line.end;
            ControlFlow::Continue(())
        })?;
        cursor.offset = offset;
        let len = fs::metadata(self.log_path()).map_or(0, |m| m.len());
        if len >= self.limits.compact_after_bytes {
            self.compact(&mut cursor)?;
        }
        self.save_cursor(&cursor)
    }

    /// Rewrites the file without the delivered lines it need not keep (before the cursor, or
    /// read out of order after it), when that frees at least half of `compact_after_bytes`.
    /// Runs under the lock: appenders and readers open the file by path under the same lock,
    /// so they see the old file or the new one, never half of each.
    fn compact(&self, cursor: &mut Cursor) -> Result<(), InboxError> {
        struct Span {
            start: u64,
            end: u64,
            delivered: bool,
            young: bool,
            id: Option<String>,
        }
        let path = self.log_path();
        let now = time::OffsetDateTime::now_utc();
        let oldest_kept = now
            - time::Duration::try_from(self.limits.keep_read_age).unwrap_or(time::Duration::MAX);
        let mut spans = Vec::new();
        let mut start = 0;
        self.for_each_line(0, |line| {
            let delivered = start < cursor.offset
                || line.entry.as_ref().is_none_or(|entry| {
                    cursor.read.contains(&entry.message.id) || entry.expired(now)
                });
            let young = line.entry.as_ref().is_some_and(|entry| {
                time::OffsetDateTime::parse(
                    &entry.received_at,
                    &time::format_description::well_known::Rfc3339,
                )
                .is_ok_and(|at| at >= oldest_kept)
            });
            spans.push(Span {
                start,
                end: line.end,
                delivered,
                young,
                id: line.entry.map(|e| e.message.id),
            });
            start = line.end;
            ControlFlow::Continue(())
        })?;
        // Keep the newest young delivered lines, up to `keep_read_bytes`.
        let mut keep = vec![true; spans.len()];
        let mut kept_delivered = 0;
        for (i, span) in spans.iter().enumerate().rev() {
            if !span.delivered {
                continue;
            }
            let size = span.end - span.start;
            keep[i] = span.young && kept_delivered + size <= self.limits.keep_read_bytes;
            if keep[i] {
                kept_delivered += size;
            }
        }
        let dropped: u64 = spans
            .iter()
            .zip(&keep)
            .filter(|(_, kept)| !**kept)
            .map(|(span, _)| span.end - span.start)
            .sum();
        if dropped < self.limits.compact_after_bytes / 2 {
            return Ok(());
        }
        let mut source = File::open(&path).map_err(|e| self.io(&path, e))?;
        let mut fresh =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        let mut new_offset = 0;
        let mut leading = true;
        let mut write = |from: u64, len: Option<u64>, out: &mut File| -> std::io::Result<u64> {
            source.seek(SeekFrom::Start(from))?;
            match len {
                Some(len) => std::io::copy(&mut (&mut source).take(len), out),
                None => std::io::copy(&mut source, out),
            }
        };
        for (span, kept) in spans.iter().zip(&keep) {
            if !kept {
                if let Some(id) = &span.id {
                    cursor.read.remove(id);
                }
                continue;
            }
            let size = span.end - span.start;
            write(span.start, Some(size), fresh.as_file_mut()).map_err(|e| self.io(&path, e))?;
            if leading && span.delivered {
                new_offset += size;
                if let Some(id) = &span.id {
                    cursor.read.remove(id);
                }
            } else {
                leading = false;
            }
        }
        // A trailing half line (a crashed append) is carried over as it is.
        write(start, None, fresh.as_file_mut()).map_err(|e| self.io(&path, e))?;
        fresh.as_file().sync_data().map_err(|e| self.io(&path, e))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = fs::set_permissions(fresh.path(), fs::Permissions::from_mode(0o600));
        }
        fresh.persist(&path).map_err(|e| self.io(&path, e.error))?;
        tracing::debug!(path = %path.display(), dropped_bytes = dropped, "inbox compacted");
        cursor.offset = new_offset;
        Ok(())
    }

    /// Ids of the last `count` messages, to recognise a message the mesh sends twice. Reads
    /// only the file's tail.
    pub fn recent_ids(&self, count: usize) -> Result<HashSet<String>, InboxError> {
        let _lock = self.lock()?;
        let len = match fs::metadata(self.log_path()) {
            Ok(meta) => meta.len(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
            Err(source) => return Err(self.io(&self.log_path(), source)),
        };
        let mut ids = std::collections::VecDeque::new();
        // From inside a line, the first (partial) line is skipped: it does not parse.
        self.for_each_line(len.saturating_sub(RECENT_TAIL_BYTES), |line| {
            if let Some(entry) = line.entry {
                ids.push_back(entry.message.id);
                if ids.len() > count {
                    ids.pop_front();
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(ids.into_iter().collect())
    }

    /// Calls `visit` with each complete line from byte `offset`, streaming (one line in
    /// memory at a time). A last chunk without its newline is an append in progress (or cut
    /// short): not yet a line.
    fn for_each_line(
        &self,
        offset: u64,
        mut visit: impl FnMut(Line) -> ControlFlow<()>,
    ) -> Result<(), InboxError> {
        let path = self.log_path();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(self.io(&path, source)),
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| self.io(&path, e))?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut raw = Vec::new();
        let mut end = offset;
        loop {
            raw.clear();
            let read = reader
                .read_until(b'\n', &mut raw)
                .map_err(|e| self.io(&path, e))?;
            if read == 0 || raw.last() != Some(&b'\n') {
                return Ok(());
            }
            end += read as u64;
            let text = &raw[..raw.len() - 1];
            let entry = match serde_json::from_slice::<InboxEntry>(text) {
                Ok(entry) => Some(entry),
                Err(err) => {
                    // A tail read starts inside a line: that one is expected not to parse.
                    if end - read as u64 != offset && !text.iter().all(u8::is_ascii_whitespace) {
                        tracing::warn!(path = %path.display(), %err, "skipping an unreadable inbox line");
                    }
                    None
                }
            };
            if visit(Line { entry, end }).is_break() {
                return Ok(());
            }
        }
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

/// Names of the entries of `dir` that end in `suffix`, pass `kind` and are valid names once the
/// suffix is cut; sorted. A missing `dir` has none.
fn valid_names(
    dir: &Path,
    kind: impl Fn(&fs::FileType) -> bool,
    suffix: &str,
) -> Result<Vec<String>, InboxError> {
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
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| kind(&t)))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(suffix)?;
            nsh_contract::names::check(stem)
                .is_none()
                .then(|| stem.to_owned())
        })
        .collect();
    names.sort();
    Ok(names)
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
        let inbox = Inbox::open(dir.path(), "team", "me").unwrap();
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
        let inbox = Inbox::open(dir.path(), "team", "me").unwrap();
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
        let inbox = Inbox::open(dir.path(), "team", "me").unwrap();
        let mut old = message("old", "bob", None);
        old.message.timestamp = "2020-01-01T00:00:00.000Z".into();
        old.message.ttl = Some(60);
        inbox.append(&old).unwrap();
        inbox.append(&message("new", "bob", None)).unwrap();
        assert_eq!(ids(&inbox.unread(&Filter::default(), 10).unwrap()), ["new"]);
    }

    #[test]
    fn names_from_a_token_are_checked_before_any_file_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("inbox");
        for hostile in ["../../escape", "a/b", "..", ".hidden", "x\ny", ""] {
            for (team, agent) in [("team", hostile), (hostile, "me")] {
                let err = Inbox::open(&inside, team, agent).unwrap_err();
                assert!(
                    matches!(err, InboxError::BadName { .. }),
                    "{team:?}/{agent:?}: {err}"
                );
            }
        }
        assert!(!inside.exists(), "nothing was created");
        // Planted files or folders with such names are never listed as inboxes.
        fs::create_dir_all(inside.join(".hidden")).unwrap();
        fs::write(inside.join(".hidden/me.jsonl"), "{}\n").unwrap();
        fs::create_dir_all(inside.join("team")).unwrap();
        fs::write(inside.join("team/..jsonl"), "{}\n").unwrap();
        assert!(Inbox::all_in(&inside).unwrap().is_empty());
    }

    #[test]
    fn the_same_agent_name_in_two_teams_has_two_inboxes() {
        let dir = tempfile::tempdir().unwrap();
        let alpha = Inbox::open(dir.path(), "alpha", "bob").unwrap();
        let local = Inbox::open(dir.path(), "local", "bob").unwrap();
        local.append(&message("for-local", "alice", None)).unwrap();
        alpha.append(&message("for-alpha", "carol", None)).unwrap();
        assert_eq!(
            ids(&alpha.unread(&Filter::default(), 10).unwrap()),
            ["for-alpha"]
        );
        assert_eq!(
            ids(&local.unread(&Filter::default(), 10).unwrap()),
            ["for-local"]
        );
        alpha.mark_read(["for-alpha"]).unwrap();
        assert_eq!(
            ids(&local.unread(&Filter::default(), 10).unwrap()),
            ["for-local"],
            "one team's cursor never moves another's"
        );
    }

    #[test]
    fn undelivered_mail_in_the_old_layout_is_refused_never_mixed() {
        let dir = tempfile::tempdir().unwrap();
        // The layout before teams: `<root>/<agent>.jsonl`.
        let legacy = Inbox {
            dir: dir.path().to_owned(),
            team: String::new(),
            agent: "bob".into(),
            limits: InboxLimits::default(),
        };
        legacy.append(&message("old", "alice", None)).unwrap();
        let err = Inbox::open(dir.path(), "alpha", "bob").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, InboxError::Legacy { .. }), "{text}");
        assert!(
            text.contains("team `alpha`") && text.contains("mv ") && text.contains("bob.jsonl"),
            "{text}"
        );
        // Once delivered, the old file is left alone and the new inbox opens.
        legacy.mark_read(["old"]).unwrap();
        let inbox = Inbox::open(dir.path(), "alpha", "bob").unwrap();
        assert!(
            inbox
                .unread(&Filter::default(), 10)
                .unwrap()
                .messages
                .is_empty()
        );
    }

    fn small_limits() -> InboxLimits {
        InboxLimits {
            max_unread_bytes: 4_000,
            compact_after_bytes: 2_000,
            keep_read_bytes: 600,
            keep_read_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_full_inbox_refuses_more_until_mail_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), "team", "me")
            .unwrap()
            .with_limits(small_limits());
        let mut stored = Vec::new();
        for i in 0..100 {
            match inbox.append(&message(&i.to_string(), "bob", None)) {
                Ok(()) => stored.push(i.to_string()),
                Err(InboxError::Full { unread, limit, .. }) => {
                    assert!(unread <= limit);
                    break;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!((10..100).contains(&stored.len()), "{} stored", stored.len());
        assert!(fs::metadata(inbox.log_path()).unwrap().len() <= 4_000);
        inbox.mark_read(stored.iter().map(String::as_str)).unwrap();
        inbox.append(&message("after", "bob", None)).unwrap();
    }

    #[test]
    fn delivered_mail_is_compacted_away_keeping_recent_ids_and_unread_mail() {
        let dir = tempfile::tempdir().unwrap();
        let limits = InboxLimits {
            max_unread_bytes: 10_000,
            ..small_limits()
        };
        let inbox = Inbox::open(dir.path(), "team", "me")
            .unwrap()
            .with_limits(limits);
        let line = serde_json::to_vec(&message("0-0", "bob", None))
            .unwrap()
            .len() as u64
            + 1;
        for round in 0..20 {
            let ids: Vec<String> = (0..5).map(|i| format!("{round}-{i}")).collect();
            for id in &ids {
                inbox.append(&message(id, "bob", None)).unwrap();
            }
            // Read all but the last of each round, out of order.
            inbox
                .mark_read(ids[..4].iter().rev().map(String::as_str))
                .unwrap();
        }
        // 100 messages went through; about the 20 unread plus the kept 600 bytes remain.
        let size = fs::metadata(inbox.log_path()).unwrap().len();
        assert!(
            size <= 20 * line + 600 + 1_000 + 4 * line,
            "{size} bytes, lines of {line}"
        );
        // Every unread message is still there, in order.
        let unread = inbox.unread(&Filter::default(), 100).unwrap();
        let expected: Vec<String> = (0..20).map(|round| format!("{round}-4")).collect();
        assert_eq!(
            ids(&unread),
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
        // The newest delivered ids are kept for dedup after a restart; the oldest are gone.
        let recent = inbox.recent_ids(1000).unwrap();
        assert!(recent.contains("19-3") && recent.contains("19-4"));
        assert!(!recent.contains("0-0"));
        assert!(inbox.find("19-3").unwrap().is_some());
        assert!(inbox.find("0-0").unwrap().is_none());
    }

    #[test]
    fn start_up_reads_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), "team", "me").unwrap();
        // 3 MB of old lines before the recent ones: more than the tail read.
        let filler = serde_json::to_string(&message("old", "bob", None)).unwrap() + "\n";
        fs::write(inbox.log_path(), filler.repeat(3_000_000 / filler.len())).unwrap();
        for id in ["a", "b"] {
            inbox.append(&message(id, "bob", None)).unwrap();
        }
        let recent = inbox.recent_ids(10).unwrap();
        assert!(recent.contains("a") && recent.contains("b") && recent.contains("old"));
        assert_eq!(recent.len(), 3);
    }

    #[test]
    fn every_inbox_in_a_directory_is_found() {
        let dir = tempfile::tempdir().unwrap();
        for (team, agent) in [("t2", "a"), ("t1", "b"), ("t1", "a")] {
            Inbox::open(dir.path(), team, agent)
                .unwrap()
                .append(&message("1", "x", None))
                .unwrap();
        }
        let found: Vec<(String, String)> = Inbox::all_in(dir.path())
            .unwrap()
            .iter()
            .map(|i| (i.team().to_owned(), i.agent().to_owned()))
            .collect();
        let expected =
            [("t1", "a"), ("t1", "b"), ("t2", "a")].map(|(t, a)| (t.to_owned(), a.to_owned()));
        assert_eq!(found, expected);
        assert!(
            Inbox::all_in(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }
}
