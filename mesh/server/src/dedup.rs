//! Recently seen message ids per sender, bounded in count and age, so a resend answers
//! `duplicate` instead of being delivered twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Dedup {
    max_ids: usize,
    max_age: Duration,
    senders: Mutex<HashMap<(String, String), Window>>,
}

#[derive(Debug, Default)]
struct Window {
    order: VecDeque<(String, Instant)>,
    ids: HashSet<String>,
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
            senders: Mutex::default(),
        }
    }

    /// Records `id` for `(team, sender)`; `false` if it is already in the window.
    pub fn first_time(&self, team: &str, sender: &str, id: &str, now: Instant) -> bool {
        let mut senders = self.senders.lock().expect("dedup lock");
        let window = senders
            .entry((team.to_owned(), sender.to_owned()))
            .or_default();
        window.expire(now, self.max_ids, self.max_age);
        if !window.ids.insert(id.to_owned()) {
            return false;
        }
        window.order.push_back((id.to_owned(), now));
        window.expire(now, self.max_ids, self.max_age);
        true
    }

    /// Forgets `id`: the send failed, so a retry with the same id must be attempted again.
    pub fn forget(&self, team: &str, sender: &str, id: &str) {
        let mut senders = self.senders.lock().expect("dedup lock");
        if let Some(window) = senders.get_mut(&(team.to_owned(), sender.to_owned())) {
            window.ids.remove(id);
            window.order.retain(|(seen, _)| seen != id);
        }
    }

    /// Drops expired ids and empty windows; run periodically so idle senders cost nothing.
    pub fn prune(&self, now: Instant) {
        let mut senders = self.senders.lock().expect("dedup lock");
        senders.retain(|_, window| {
            window.expire(now, self.max_ids, self.max_age);
            !window.order.is_empty()
        });
    }

    pub fn tracked_ids(&self) -> usize {
        self.senders
            .lock()
            .expect("dedup lock")
            .values()
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
        assert!(d.first_time("t", "a", "1", now));
        assert!(!d.first_time("t", "a", "1", now));
        assert!(
            d.first_time("t", "b", "1", now),
            "another sender may reuse an id"
        );
        assert!(
            d.first_time("u", "a", "1", now),
            "another team may reuse an id"
        );
        d.forget("t", "a", "1");
        assert!(
            d.first_time("t", "a", "1", now),
            "a failed send may be retried"
        );
    }

    #[test]
    fn window_is_bounded_by_age() {
        let d = Dedup::new(10, Duration::from_secs(60));
        let now = Instant::now();
        assert!(d.first_time("t", "a", "1", now));
        assert!(d.first_time("t", "a", "1", now + Duration::from_secs(61)));
        d.prune(now + Duration::from_secs(200));
        assert_eq!(d.tracked_ids(), 0);
    }

    proptest! {
        /// Whatever the traffic, a window never holds more than `max_ids`, and an id within the
        /// newest `max_ids` is always recognised.
        #[test]
        fn window_is_bounded_by_count(ids in prop::collection::vec(0u16..50, 1..300), max in 1usize..20) {
            let d = Dedup::new(max, Duration::from_secs(3600));
            let now = Instant::now();
            for id in &ids {
                d.first_time("t", "a", &id.to_string(), now);
                prop_assert!(d.tracked_ids() <= max);
            }
            let last = ids.last().unwrap().to_string();
            prop_assert!(!d.first_time("t", "a", &last, now));
        }
    }
}
