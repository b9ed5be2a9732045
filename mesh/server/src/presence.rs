//! Presence announcements, throttled per agent: the first change is announced at once, later
//! changes within `interval` fold into one announcement at its end, and only if the state
//! then differs from the last one announced. An agent that connects and disconnects in a loop
//! costs its team at most two frames per interval, not two per cycle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct PresenceThrottle {
    interval: Duration,
    slots: Mutex<HashMap<(String, String), Slot>>,
}

#[derive(Debug, Default)]
struct Slot {
    /// What the team was last told (online or not).
    announced: Option<bool>,
    last: Option<Instant>,
    /// A trailing announcement is scheduled.
    pending: bool,
}

/// What to do about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announce {
    /// Tell the team now.
    Now(bool),
    /// Call [`PresenceThrottle::settle`] after this long.
    Later(Duration),
    Nothing,
}

impl PresenceThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            slots: Mutex::default(),
        }
    }

    /// `agent` of `team` just came online (or went offline).
    pub(crate) fn changed(&self, team: &str, agent: &str, online: bool, now: Instant) -> Announce {
        let mut slots = self.slots.lock().expect("presence lock");
        let slot = slots
            .entry((team.to_owned(), agent.to_owned()))
            .or_default();
        if slot.pending {
            return Announce::Nothing;
        }
        match slot.last {
            Some(last) if now.duration_since(last) < self.interval => {
                slot.pending = true;
                Announce::Later(self.interval - now.duration_since(last))
            }
            _ if slot.announced == Some(online) => Announce::Nothing,
            _ => {
                slot.announced = Some(online);
                slot.last = Some(now);
                Announce::Now(online)
            }
        }
    }

    /// The trailing announcement is due and the agent's state is now `online`: what to tell.
    pub(crate) fn settle(
        &self,
        team: &str,
        agent: &str,
        online: bool,
        now: Instant,
    ) -> Option<bool> {
        let mut slots = self.slots.lock().expect("presence lock");
        let slot = slots
            .entry((team.to_owned(), agent.to_owned()))
            .or_default();
        slot.pending = false;
        if slot.announced == Some(online) {
            return None;
        }
        slot.announced = Some(online);
        slot.last = Some(now);
        Some(online)
    }

    /// Forgets agents announced offline more than an interval ago.
    pub(crate) fn prune(&self, now: Instant) {
        self.slots.lock().expect("presence lock").retain(|_, slot| {
            slot.pending
                || slot.announced != Some(false)
                || slot
                    .last
                    .is_none_or(|last| now.duration_since(last) < self.interval)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_agent_is_announced_once_per_interval_with_its_final_state() {
        let throttle = PresenceThrottle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(throttle.changed("t", "a", true, t0), Announce::Now(true));
        let soon = t0 + Duration::from_millis(100);
        assert_eq!(
            throttle.changed("t", "a", false, soon),
            Announce::Later(Duration::from_millis(900))
        );
        // A hundred more cycles inside the interval: nothing more is scheduled.
        for i in 0..100 {
            assert_eq!(
                throttle.changed("t", "a", i % 2 == 0, soon),
                Announce::Nothing
            );
        }
        // It ended online, which the team already knows: nothing to say.
        assert_eq!(
            throttle.settle("t", "a", true, t0 + Duration::from_secs(1)),
            None
        );
        // Ended offline instead: one announcement.
        let later = t0 + Duration::from_secs(3);
        assert_eq!(
            throttle.changed("t", "a", false, later),
            Announce::Now(false)
        );
        // Other agents are independent.
        assert_eq!(throttle.changed("t", "b", true, later), Announce::Now(true));
        throttle.prune(later + Duration::from_secs(2));
        assert_eq!(
            throttle.slots.lock().unwrap().len(),
            1,
            "offline agents are forgotten"
        );
    }
}
