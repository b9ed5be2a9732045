//! Recently seen message ids per sender, bounded in count and age, so a resend answers
//! `duplicate` instead of being delivered twice.
//!
//! An id is *in flight* from its first sight until its send completes or fails. A retry of an
//! in-flight id must not be called a duplicate: the first attempt may still fail, and the
//! client would then hold an ack for a message that was never stored or delivered. It is told
//! to retry instead, and gets `duplicate` only once the first attempt succeeded.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use siphasher::sip128::{Hasher128 as _, SipHasher13};

#[derive(Debug)]
pub struct Dedup {
    max_ids: usize,
    max_age: Duration,
    /// This process's random key for [`Fingerprint`]s.
    key: (u64, u64),
    /// Team -> sender -> window: two levels, so a lookup borrows the names rather than
    /// building an owned key for every message.
    senders: Mutex<HashMap<String, HashMap<String, Window>>>,
}

/// A message id as the window keeps it: its keyed 128-bit SipHash. Two different ids share one
/// with probability 2^-128, and a client cannot aim for that without the process's random key,
/// so a window answers as if it kept the ids themselves; it keeps no text per id (no allocation,
/// no string compare, no second hash when an id expires), which is most of its cost per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Fingerprint(u128);

/// Hashes a [`Fingerprint`] for its map: it is already a keyed uniform hash, so its low bits
/// serve as they are.
#[derive(Debug, Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; fold anything else rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

#[derive(Debug, Default)]
struct Window {
    /// Fingerprints in arrival order.
    order: VecDeque<(Fingerprint, Instant)>,
    /// Fingerprint -> whether its send completed.
    ids: HashMap<Fingerprint, bool, BuildHasherDefault<FingerprintHasher>>,
}

/// What the window knows of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen: now recorded as in flight.
    First,
    /// Seen, and its send is still in progress.
    InFlight,
    /// Seen and completed: a resend is a duplicate.
    Done,
}

impl Window {
    fn expire(&mut self, now: Instant, max_ids: usize, max_age: Duration) {
        while let Some((id, at)) = self.order.front() {
            if self.order.len() <= max_ids && now.duration_since(*at) <= max_age {
                break;
            }
            self.ids.remove(id);
            self.order.pop_front();
        }
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
        Fingerprint(hasher.finish128().as_u128())
    }

    /// What is known of `id` from `(team, sender)`; records it as in flight when new.
    pub fn check(&self, team: &str, sender: &str, id: &str, now: Instant) -> Seen {
        let id = self.fingerprint(id);
        let mut teams = self.senders.lock().expect("dedup lock");
        if !teams.contains_key(team) {
            teams.insert(team.to_owned(), HashMap::new());
        }
        let senders = teams.get_mut(team).expect("inserted above");
        if !senders.contains_key(sender) {
            senders.insert(sender.to_owned(), Window::default());
        }
        let window = senders.get_mut(sender).expect("inserted above");
        window.expire(now, self.max_ids, self.max_age);
        match window.ids.get(&id) {
            Some(true) => return Seen::Done,
            Some(false) => return Seen::InFlight,
            None => {}
        }
        window.ids.insert(id, false);
        window.order.push_back((id, now));
        window.expire(now, self.max_ids, self.max_age);
        Seen::First
    }

    /// The send of `id` succeeded: from now on a resend is a duplicate.
    pub fn complete(&self, team: &str, sender: &str, id: &str) {
        let id = self.fingerprint(id);
        let mut teams = self.senders.lock().expect("dedup lock");
        if let Some(done) = teams
            .get_mut(team)
            .and_then(|senders| senders.get_mut(sender))
            .and_then(|window| window.ids.get_mut(&id))
        {
            *done = true;
        }
    }

    /// Forgets `id`: the send failed, so a retry with the same id must be attempted again.
    pub fn forget(&self, team: &str, sender: &str, id: &str) {
        let id = self.fingerprint(id);
        let mut teams = self.senders.lock().expect("dedup lock");
        if let Some(window) = teams
            .get_mut(team)
            .and_then(|senders| senders.get_mut(sender))
        {
            window.ids.remove(&id);
            window.order.retain(|(seen, _)| *seen != id);
        }
    }

    /// Drops expired ids and empty windows; run periodically so idle senders cost nothing.
    pub fn prune(&self, now: Instant) {
        let mut teams = self.senders.lock().expect("dedup lock");
        teams.retain(|_, senders| {
            senders.retain(|_, window| {
                window.expire(now, self.max_ids, self.max_age);
                !window.order.is_empty()
            });
            !senders.is_empty()
        });
    }

    pub fn tracked_ids(&self) -> usize {
        self.senders
            .lock()
            .expect("dedup lock")
            .values()
            .flat_map(HashMap::values)
            .map(|w| w.order.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn resends_are_caught_per_sender_and_team() {
        let d = Dedup::new(10, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(d.check("t", "a", "1", now), Seen::First);
        d.complete("t", "a", "1");
        assert_eq!(d.check("t", "a", "1", now), Seen::Done);
        assert_eq!(
            d.check("t", "b", "1", now),
            Seen::First,
            "another sender may reuse an id"
        );
        assert_eq!(
            d.check("u", "a", "1", now),
            Seen::First,
            "another team may reuse an id"
        );
        d.forget("t", "a", "1");
        assert_eq!(
            d.check("t", "a", "1", now),
            Seen::First,
            "a failed send may be retried"
        );
    }

    #[test]
    fn a_resend_while_the_first_is_in_flight_is_not_a_duplicate() {
        let d = Dedup::new(10, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(d.check("t", "a", "1", now), Seen::First);
        assert_eq!(d.check("t", "a", "1", now), Seen::InFlight);
        // The first attempt failed: the retry is tried for real.
        d.forget("t", "a", "1");
        assert_eq!(d.check("t", "a", "1", now), Seen::First);
    }

    #[test]
    fn window_is_bounded_by_age() {
        let d = Dedup::new(10, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(d.check("t", "a", "1", now), Seen::First);
        assert_eq!(
            d.check("t", "a", "1", now + Duration::from_secs(61)),
            Seen::First
        );
        d.prune(now + Duration::from_secs(200));
        assert_eq!(d.tracked_ids(), 0);
    }

    proptest! {
        /// The window keeps fingerprints, not ids: a different id is never taken for a seen one,
        /// and the same id always is.
        #[test]
        fn ids_are_told_apart_by_their_fingerprints(a in "[A-Za-z0-9:._-]{1,64}", b in "[A-Za-z0-9:._-]{1,64}") {
            let d = Dedup::new(10, Duration::from_secs(60));
            let now = Instant::now();
            prop_assert_eq!(d.check("t", "s", &a, now), Seen::First);
            d.complete("t", "s", &a);
            let expected = if a == b { Seen::Done } else { Seen::First };
            prop_assert_eq!(d.check("t", "s", &b, now), expected);
        }

        /// Whatever the traffic, a window never holds more than `max_ids`, and an id within the
        /// newest `max_ids` is always recognised.
        #[test]
        fn window_is_bounded_by_count(ids in prop::collection::vec(0u16..50, 1..300), max in 1usize..20) {
            let d = Dedup::new(max, Duration::from_secs(3600));
            let now = Instant::now();
            for id in &ids {
                d.check("t", "a", &id.to_string(), now);
                d.complete("t", "a", &id.to_string());
                prop_assert!(d.tracked_ids() <= max);
            }
            let last = ids.last().unwrap().to_string();
            prop_assert_eq!(d.check("t", "a", &last, now), Seen::Done);
        }
    }
}
