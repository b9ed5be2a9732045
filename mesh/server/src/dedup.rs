//! Recently seen message ids per sender, bounded in count and age, so a resend answers
//! `duplicate` instead of being delivered twice.
//!
//! An id is *in flight* from its first sight until its send completes or fails. A retry of an
//! in-flight id must not be called a duplicate: the first attempt may still fail, and the
//! client would then hold an ack for a message that was never stored or delivered. It is told
//! to retry instead, and gets `duplicate` only once the first attempt succeeded.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use siphasher::sip128::{Hasher128 as _, SipHasher13};

use crate::maps::FastMap;

#[derive(Debug)]
pub struct Dedup {
    max_ids: usize,
    max_age: Duration,
    /// This process's random key for [`Fingerprint`]s.
    key: (u64, u64),
    /// Team -> sender -> window: two levels, so a lookup borrows the names rather than
    /// building an owned key. A connection keeps its sender's window ([`Dedup::sender`]), so
    /// the messages it sends skip this lookup.
    senders: Mutex<FastMap<String, FastMap<String, SenderWindow>>>,
}

/// One sender's window, as a connection of that sender keeps it: its sends lock only this
/// window, without the lock over every sender and the two lookups by name (about 1% of the
/// relay's CPU). The sender's other connections share it through [`Dedup::sender`].
#[derive(Debug, Clone)]
pub struct SenderWindow(Arc<Mutex<Window>>);

impl SenderWindow {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.0.lock().expect("dedup window lock")
    }

    /// Whether only the directory holds it: no connection can send through it, so it may go.
    fn unheld(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

/// A message id as the window keeps it: its keyed 128-bit SipHash. Two different ids share one
/// with probability 2^-128, and a client cannot aim for that without the process's random key,
/// so a window answers as if it kept the ids themselves, without keeping their text (no
/// allocation or string compare per message).
/// Two words rather than a `u128`, whose 16-byte alignment would pad every slot and index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint([u64; 2]);

impl std::hash::Hash for Fingerprint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a keyed uniform hash: one word of it serves as the map's hash.
        state.write_u64(self.0[0]);
    }
}

/// Hashes a [`Fingerprint`] for its map: the word it is given, as it is.
#[derive(Debug, Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

/// One sender's recent sends. Slots sit in arrival order; the index finds an id's slot. An
/// expiring slot leaves its index entry behind, swept out once the index holds half a window
/// more than the window (a table the size a full window needs): removing it at once would touch
/// a cold cache line for every message (the expiring id was seen a thousand messages ago), and
/// a lookup tells a stale entry by its sequence number. `check` hands back the new slot's
/// [`Ticket`], so `complete` goes straight to the slot without a lookup.
#[derive(Debug, Default)]
struct Window {
    /// `slots[i]` has sequence number `first + i`.
    slots: VecDeque<Slot>,
    first: u64,
    /// Fingerprint -> sequence number of its slot (stale when below `first`).
    index: HashMap<Fingerprint, u64, BuildHasherDefault<FingerprintHasher>>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    id: Fingerprint,
    at: Instant,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Done,
    /// The send failed: the id is free again (its slot stays until it expires, as a gap).
    Forgotten,
}

/// What a dedup record knows of an id: the answer of the replicas' shared record in Redis
/// (`cluster`), and what a local window's [`Checked`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen: now recorded as in flight.
    First,
    /// Seen, and its send is still in progress.
    InFlight,
    /// Seen and completed: a resend is a duplicate.
    Done,
}

/// What [`Dedup::check`] found ([`Seen`], with the new send's ticket when the id is new).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Not seen: now recorded as in flight, at this ticket.
    First(Ticket),
    InFlight,
    Done,
}

/// A new send's place in its sender's window, from [`Dedup::check`]: what
/// [`Dedup::complete`] or [`Dedup::forget`] marks when the send ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    seq: u64,
    id: Fingerprint,
}

impl Window {
    fn expire(&mut self, now: Instant, max_ids: usize, max_age: Duration) {
        while let Some(slot) = self.slots.front() {
            if self.slots.len() <= max_ids && now.duration_since(slot.at) <= max_age {
                break;
            }
            self.slots.pop_front();
            self.first += 1;
        }
    }

    /// Frees an empty window's storage.
    fn release_memory(&mut self) {
        self.slots = VecDeque::new();
        self.index = HashMap::default();
    }

    /// The live slot `id` has, if any.
    fn find(&self, id: Fingerprint) -> Option<&Slot> {
        let seq = *self.index.get(&id)?;
        let slot = self
            .slots
            .get(usize::try_from(seq.checked_sub(self.first)?).ok()?)?;
        (slot.id == id && slot.state != State::Forgotten).then_some(slot)
    }

    fn slot_mut(&mut self, ticket: Ticket) -> Option<&mut Slot> {
        let at = usize::try_from(ticket.seq.checked_sub(self.first)?).ok()?;
        self.slots.get_mut(at).filter(|slot| slot.id == ticket.id)
    }

    fn push(&mut self, id: Fingerprint, now: Instant, max_ids: usize) -> Ticket {
        let seq = self.first + self.slots.len() as u64;
        self.slots.push_back(Slot {
            id,
            at: now,
            state: State::InFlight,
        });
        self.index.insert(id, seq);
        if self.index.len() >= max_ids + max_ids / 2 + 16 {
            let first = self.first;
            self.index.retain(|_, seq| *seq >= first);
        }
        Ticket { seq, id }
    }
}

impl Dedup {
    pub fn new(max_ids: usize, max_age: Duration) -> Self {
        Self {
            max_ids: max_ids.max(1),
            max_age,
            key: rand::random(),
            senders: Mutex::default(),
        }
    }

    fn fingerprint(&self, id: &str) -> Fingerprint {
        let mut hasher = SipHasher13::new_with_keys(self.key.0, self.key.1);
        hasher.write(id.as_bytes());
        let hash = hasher.finish128();
        Fingerprint([hash.h1, hash.h2])
    }

    /// `sender`'s window in `team`, made on first use: what that sender's connection keeps.
    pub fn sender(&self, team: &str, sender: &str) -> SenderWindow {
        let mut teams = self.senders.lock().expect("dedup lock");
        if !teams.contains_key(team) {
            teams.insert(team.to_owned(), FastMap::default());
        }
        let senders = teams.get_mut(team).expect("inserted above");
        if !senders.contains_key(sender) {
            let window = SenderWindow(Arc::new(Mutex::new(Window::default())));
            senders.insert(sender.to_owned(), window);
        }
        senders[sender].clone()
    }

    /// What is known of `id` from `window`'s sender. A new id is recorded as in flight, and
    /// its ticket is what the send's end is reported with.
    pub fn check(&self, window: &SenderWindow, id: &str, now: Instant) -> Checked {
        let id = self.fingerprint(id);
        let mut window = window.lock();
        window.expire(now, self.max_ids, self.max_age);
        match window.find(id).map(|slot| slot.state) {
            Some(State::Done) => return Checked::Done,
            Some(_) => return Checked::InFlight,
            None => {}
        }
        let ticket = window.push(id, now, self.max_ids);
        window.expire(now, self.max_ids, self.max_age);
        Checked::First(ticket)
    }

    /// The send succeeded: from now on a resend is a duplicate.
    pub fn complete(&self, window: &SenderWindow, ticket: Ticket) {
        Self::mark(window, ticket, State::Done);
    }

    /// The send failed: a retry with the same id must be attempted again.
    pub fn forget(&self, window: &SenderWindow, ticket: Ticket) {
        Self::mark(window, ticket, State::Forgotten);
    }

    fn mark(window: &SenderWindow, ticket: Ticket, state: State) {
        // Gone (expired, or the window pruned) is fine: nothing is left to mark.
        if let Some(slot) = window.lock().slot_mut(ticket) {
            slot.state = state;
        }
    }

    /// Drops expired ids, and empty windows no connection holds; run periodically so idle
    /// senders cost nothing. (A held window stays: its connection sends through it, and a new
    /// one made by name would not see that connection's sends.)
    pub fn prune(&self, now: Instant) {
        let mut teams = self.senders.lock().expect("dedup lock");
        teams.retain(|_, senders| {
            senders.retain(|_, window| {
                // Checked under the directory's lock, where a window is handed out: unheld
                // now means no connection can get it before it goes.
                let unheld = window.unheld();
                let mut slots = window.lock();
                slots.expire(now, self.max_ids, self.max_age);
                if slots.slots.is_empty() {
                    // An idle connection keeps its window: without the room a busy one grew
                    // (some 90 KB at 1,024 ids), whose sequence numbers go on where they were.
                    slots.release_memory();
                }
                !(unheld && slots.slots.is_empty())
            });
            !senders.is_empty()
        });
    }

    /// Ids the windows hold (in flight or done).
    pub fn tracked_ids(&self) -> usize {
        self.senders
            .lock()
            .expect("dedup lock")
            .values()
            .flat_map(HashMap::values)
            .map(|w| {
                w.lock()
                    .slots
                    .iter()
                    .filter(|slot| slot.state != State::Forgotten)
                    .count()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    /// The ticket of a check that must find the id new.
    fn first(checked: Checked) -> Ticket {
        match checked {
            Checked::First(ticket) => ticket,
            other => panic!("expected a new id, got {other:?}"),
        }
    }

    #[test]
    fn resends_are_caught_per_sender_and_team() {
        let d = Dedup::new(10, Duration::from_secs(60));
        let now = Instant::now();
        let (a, b, other_team) = (d.sender("t", "a"), d.sender("t", "b"), d.sender("u", "a"));
        let sent = first(d.check(&a, "1", now));
        d.complete(&a, sent);
        assert_eq!(d.check(&a, "1", now), Checked::Done);
        let by_b = first(d.check(&b, "1", now));
        let by_other_team = first(d.check(&other_team, "1", now));
        d.forget(&b, by_b);
        first(d.check(&b, "1", now));
        // A ticket marks its own window only.
        d.complete(&other_team, by_other_team);
        assert_eq!(d.check(&b, "1", now), Checked::InFlight);
    }

    #[test]
    fn a_senders_connections_share_its_window() {
        let d = Dedup::new(10, Duration::from_secs(60));
        let now = Instant::now();
        let (first_connection, second_connection) = (d.sender("t", "a"), d.sender("t", "a"));
        let sent = first(d.check(&first_connection, "1", now));
        assert_eq!(d.check(&second_connection, "1", now), Checked::InFlight);
        d.complete(&first_connection, sent);
        assert_eq!(d.check(&second_connection, "1", now), Checked::Done);
        // Looked up by name (as a message handed over by another replica is), it is the same.
        assert_eq!(d.check(&d.sender("t", "a"), "1", now), Checked::Done);
    }

    #[test]
    fn a_resend_while_the_first_is_in_flight_is_not_a_duplicate() {
        let d = Dedup::new(10, Duration::from_secs(60));
        let now = Instant::now();
        let a = d.sender("t", "a");
        let sent = first(d.check(&a, "1", now));
        assert_eq!(d.check(&a, "1", now), Checked::InFlight);
        // The first attempt failed: the retry is tried for real.
        d.forget(&a, sent);
        let retry = first(d.check(&a, "1", now));
        d.complete(&a, retry);
        assert_eq!(d.check(&a, "1", now), Checked::Done);
    }

    #[test]
    fn window_is_bounded_by_age() {
        let d = Dedup::new(10, Duration::from_secs(60));
        let now = Instant::now();
        let a = d.sender("t", "a");
        let sent = first(d.check(&a, "1", now));
        d.complete(&a, sent);
        first(d.check(&a, "1", now + Duration::from_secs(61)));
        d.prune(now + Duration::from_secs(200));
        assert_eq!(d.tracked_ids(), 0);
        // A ticket whose slot is gone marks nothing.
        d.complete(&a, sent);
        assert_eq!(d.tracked_ids(), 0);
    }

    #[test]
    fn prune_drops_only_the_empty_windows_no_connection_holds() {
        let d = Dedup::new(10, Duration::from_secs(60));
        let now = Instant::now();
        let held = d.sender("t", "held");
        let sent = first(d.check(&d.sender("t", "gone"), "1", now));
        d.complete(&d.sender("t", "gone"), sent);
        let windows = |d: &Dedup| {
            let teams = d.senders.lock().unwrap();
            teams
                .values()
                .flat_map(HashMap::keys)
                .cloned()
                .collect::<Vec<_>>()
        };
        // Not expired yet: both stay.
        d.prune(now);
        assert_eq!(windows(&d).len(), 2);
        d.prune(now + Duration::from_secs(200));
        assert_eq!(windows(&d), ["held"]);
        // An idle connection's window keeps no room for the ids it no longer holds.
        let busy = d.sender("t", "busy");
        for id in 0..8 {
            let sent = first(d.check(&busy, &id.to_string(), now));
            d.complete(&busy, sent);
        }
        d.prune(now + Duration::from_secs(300));
        assert_eq!(busy.lock().slots.capacity(), 0);
        assert_eq!(busy.lock().index.capacity(), 0);
        // The held window is still the one its connection uses.
        let sent = first(d.check(&held, "2", now));
        d.complete(&held, sent);
        assert_eq!(d.check(&d.sender("t", "held"), "2", now), Checked::Done);
        drop((held, busy));
        d.prune(now + Duration::from_secs(400));
        assert!(windows(&d).is_empty());
    }

    #[test]
    fn expired_ids_leave_the_index_bounded() {
        let d = Dedup::new(4, Duration::from_secs(3600));
        let now = Instant::now();
        let a = d.sender("t", "a");
        for id in 0..1000 {
            let sent = first(d.check(&a, &id.to_string(), now));
            d.complete(&a, sent);
        }
        let window = a.lock();
        assert_eq!(window.slots.len(), 4);
        assert!(window.index.len() < 4 + 2 + 16, "{}", window.index.len());
    }

    /// What a window should answer, kept the slow way: every send in order, as (id, state).
    #[derive(Default)]
    struct Model {
        sends: VecDeque<(String, State, u64)>,
        next: u64,
    }

    impl Model {
        fn check(&mut self, id: &str, max: usize) -> Seen {
            let live = self
                .sends
                .iter()
                .find(|(seen, state, _)| seen == id && *state != State::Forgotten);
            match live.map(|(_, state, _)| *state) {
                Some(State::Done) => Seen::Done,
                Some(_) => Seen::InFlight,
                None => {
                    self.sends
                        .push_back((id.to_owned(), State::InFlight, self.next));
                    self.next += 1;
                    while self.sends.len() > max {
                        self.sends.pop_front();
                    }
                    Seen::First
                }
            }
        }

        fn mark(&mut self, seq: u64, state: State) {
            if let Some(send) = self.sends.iter_mut().find(|(_, _, s)| *s == seq) {
                send.1 = state;
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Check(u8),
        /// Ends the `n`th send still open (in flight, by ticket).
        Complete(usize),
        Forget(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..40).prop_map(Op::Check),
            (0usize..8).prop_map(Op::Complete),
            (0usize..8).prop_map(Op::Forget),
        ]
    }

    proptest! {
        /// The window keeps fingerprints, not ids: a different id is never taken for a seen one,
        /// and the same id always is.
        #[test]
        fn ids_are_told_apart_by_their_fingerprints(a in "[A-Za-z0-9:._-]{1,64}", b in "[A-Za-z0-9:._-]{1,64}") {
            let d = Dedup::new(10, Duration::from_secs(60));
            let now = Instant::now();
            let s = d.sender("t", "s");
            let sent = first(d.check(&s, &a, now));
            d.complete(&s, sent);
            let again = d.check(&s, &b, now);
            if a == b {
                prop_assert_eq!(again, Checked::Done);
            } else {
                prop_assert!(matches!(again, Checked::First(_)), "{:?}", again);
            }
        }

        /// Any mix of sends, completions and failures answers as the slow model does, and a
        /// window never holds more than `max_ids`.
        #[test]
        fn the_window_answers_as_the_model(ops in prop::collection::vec(op(), 1..400), max in 1usize..10) {
            let d = Dedup::new(max, Duration::from_secs(3600));
            let now = Instant::now();
            let a = d.sender("t", "a");
            let mut model = Model::default();
            let mut open: Vec<(Ticket, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Check(id) => {
                        let id = id.to_string();
                        let checked = d.check(&a, &id, now);
                        let expected = model.check(&id, max);
                        let seen = match checked {
                            Checked::First(ticket) => {
                                open.push((ticket, model.next - 1));
                                Seen::First
                            }
                            Checked::InFlight => Seen::InFlight,
                            Checked::Done => Seen::Done,
                        };
                        prop_assert_eq!(seen, expected, "id {}", id);
                    }
                    Op::Complete(_) | Op::Forget(_) if open.is_empty() => {}
                    Op::Complete(n) => {
                        let (ticket, seq) = open.remove(n % open.len());
                        d.complete(&a, ticket);
                        model.mark(seq, State::Done);
                    }
                    Op::Forget(n) => {
                        let (ticket, seq) = open.remove(n % open.len());
                        d.forget(&a, ticket);
                        model.mark(seq, State::Forgotten);
                    }
                }
                prop_assert!(d.tracked_ids() <= max);
            }
        }
    }
}
