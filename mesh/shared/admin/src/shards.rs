//! Where accepted connections run: on the caller's runtime, or pinned, round robin, to a set
//! of single-threaded runtimes ("shards"), one per thread.
//!
//! Why pin: a relay does little work per message and much waking. On a multi-threaded runtime
//! a connection's reader, its handlers and its writer wake each other across worker threads
//! (a futex and a context switch a hop), and the LIFO slot runs a woken writer at once, so
//! each frame leaves in its own write. On one single-threaded runtime a connection's tasks
//! share one FIFO run queue: the writer runs after the handlers of everything read in the
//! same round and sends their frames in one write. `scripts/bench-mesh.sh` measures both
//! (docs/mesh-server.md, "CPU per relayed message").
//!
//! [`Batching`] is the other half: how a shard's thread goes to sleep when it runs out of work.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The runtimes connections are placed on. Cloning shares them; the extra threads stop when
/// the last clone is dropped (their connections' tasks with them).
#[derive(Debug, Clone, Default)]
pub struct Shards {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `None`: the runtime that created the shards (the caller's thread).
    runtimes: Vec<Option<Handle>>,
    next: AtomicUsize,
    /// Dropping these stops the extra threads.
    _stops: Vec<oneshot::Sender<()>>,
}

/// One shard's runtime for a connection: the caller's, or another thread's.
#[derive(Debug)]
pub enum Placement<'a> {
    Here,
    Thread(&'a Handle),
}

impl Shards {
    /// Connections run on the caller's runtime, as plain `tokio::spawn`ed tasks.
    pub fn caller() -> Self {
        Self::default()
    }

    /// `count` shards: the caller's runtime and `count - 1` new threads, each running a
    /// single-threaded runtime that parks as `batching` says. Meant for a caller on a
    /// single-threaded runtime itself, built with the same [`Batching::before_park`].
    pub fn start(count: usize, batching: Batching) -> std::io::Result<Self> {
        let mut runtimes = vec![None];
        let mut stops = Vec::new();
        for index in 1..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(batching.before_park())
                .build()?;
            runtimes.push(Some(runtime.handle().clone()));
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("shard-{index}"))
                .spawn(move || {
                    // Runs the connections' tasks until told to stop; dropping the runtime
                    // then drops whatever tasks are left.
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                runtimes,
                next: AtomicUsize::new(0),
                _stops: stops,
            }),
        })
    }

    /// How many runtimes connections are spread over (1 for the caller's alone).
    pub fn count(&self) -> usize {
        self.inner.runtimes.len().max(1)
    }

    /// The next connection's runtime, round robin.
    pub fn next(&self) -> Placement<'_> {
        let runtimes = &self.inner.runtimes;
        if runtimes.len() <= 1 {
            return Placement::Here;
        }
        let index = self.inner.next.fetch_add(1, Ordering::Relaxed) % runtimes.len();
        match &runtimes[index] {
            None => Placement::Here,
            Some(handle) => Placement::Thread(handle),
        }
    }
}

/// How a shard's thread goes to sleep when it runs out of work: at once, or, when messages are
/// arriving fast, once it has waited for more of them.
///
/// A thread that runs out of work sleeps in `epoll_wait`, and the next frame wakes it again: a
/// context switch, and a read and a write for the few frames that came in meanwhile. When the
/// clients keep the server nearly but not fully busy, that waking costs more than relaying the
/// messages themselves (docs/mesh-server.md, "CPU per relayed message"): NIC interrupt
/// moderation's problem, with its adaptive answer. The thread counts the messages it handles
/// ([`note_message`]) and, each time it is about to sleep, takes the rate of its last two
/// rounds (messages over the time since the sleep before them). At a rate that would bring
/// `min_messages` during `wait`, it first waits `wait` off the CPU, then takes everything that
/// arrived in one wake-up; at a lower rate, or with fewer than `min_messages` in those two
/// rounds, it sleeps at once, so a lone message is never held back, nor, mostly, a burst now
/// and then. At twice that rate ([`FULL_ROUND`]) it waits twice as long: the clients keep the
/// thread busy, and how long a round lasts sets how many wake-ups each message costs.
///
/// A rate, not a count of the last round's messages: once a thread had slept at once after a
/// small round, each wake-up found only what arrived while it woke (two or three messages, under
/// a load that brings thirty in a waited-for round), and it could stay in that state for much
/// of a run: about twice the context switches per message in 4 of some 55 runs under the
/// bench's Node generator (docs/mesh-server.md, "Tenth round").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// How long to wait when messages are arriving fast; zero turns batching off.
    pub wait: Duration,
    /// The rate that is fast: this many messages per `wait`, and at least this many in the
    /// thread's last two rounds.
    pub min_messages: u32,
}

impl Batching {
    /// Every thread sleeps as soon as it runs out of work.
    pub const OFF: Self = Self {
        wait: Duration::ZERO,
        min_messages: u32::MAX,
    };

    /// The hook for `tokio::runtime::Builder::on_thread_park`, which runs on the thread just
    /// before it would sleep on the network.
    pub fn before_park(self) -> impl Fn() + Send + Sync + 'static {
        move || {
            let now = Instant::now();
            let handled = MESSAGES_THIS_ROUND.with(|count| count.replace(0));
            let wait = LAST_PARK.with(|last| match last.get() {
                Some((parked, before)) => {
                    let this = Round {
                        messages: handled,
                        lasted: now.saturating_duration_since(parked),
                    };
                    last.set(Some((now, this)));
                    self.wait_after(this.and(before))
                }
                None => {
                    // The thread's first sleep: no rate yet.
                    last.set(Some((now, Round::NOTHING)));
                    Duration::ZERO
                }
            });
            if !wait.is_zero() {
                // Off the CPU, not spinning: a wait that burned CPU would cost what it saves.
                std::thread::sleep(wait);
            }
        }
    }

    /// Whether `recent` holds at least `times` times `min_messages`, and came at a rate that
    /// brings that many per `wait`. The count keeps a few messages that happen to come close
    /// together (two rounds of a few microseconds make any rate) from holding back the next.
    fn at_rate(self, recent: Round, times: u32) -> bool {
        let needed = self.min_messages.saturating_mul(times);
        !self.wait.is_zero()
            && recent.messages >= needed
            && u128::from(recent.messages) * self.wait.as_nanos()
                >= u128::from(needed) * recent.lasted.as_nanos()
    }

    /// How long to wait after the rounds summed in `recent` (zero: sleep at once).
    fn wait_after(self, recent: Round) -> Duration {
        if !self.at_rate(recent, 1) {
            Duration::ZERO
        } else if self.at_rate(recent, FULL_ROUND) {
            self.wait.saturating_mul(2)
        } else {
            self.wait
        }
    }
}

/// What a thread handled between two sleeps, and how long that took (the first sleep included:
/// messages arrive during it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Round {
    messages: u32,
    lasted: Duration,
}

impl Round {
    /// Before a thread's first sleep.
    const NOTHING: Self = Self {
        messages: 0,
        lasted: Duration::ZERO,
    };

    fn and(self, other: Self) -> Self {
        Self {
            messages: self.messages.saturating_add(other.messages),
            lasted: self.lasted.saturating_add(other.lasted),
        }
    }
}

/// At this many times the rate [`Batching`] calls fast, the wait is doubled. With the defaults
/// (4 messages per 400 µs, 10,000 a second), from 20,000 messages a second: the Node load
/// generator of `scripts/bench-mesh.sh` keeps the thread nearly saturated (some 38,000), and
/// 5,000 a second in ticks of a millisecond keeps the short wait or none (docs/mesh-server.md,
/// "Eighth round" and "Tenth round").
pub const FULL_ROUND: u32 = 2;

impl Default for Batching {
    fn default() -> Self {
        Self::OFF
    }
}

thread_local! {
    /// Messages handled on this thread since it last went to sleep.
    static MESSAGES_THIS_ROUND: Cell<u32> = const { Cell::new(0) };
    /// When this thread last went to sleep, and the round that ended then.
    static LAST_PARK: Cell<Option<(Instant, Round)>> = const { Cell::new(None) };
}

/// Counts one message handled on this thread, for the rate [`Batching`] goes by.
pub fn note_message() {
    MESSAGES_THIS_ROUND.with(|count| count.set(count.get().saturating_add(1)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages_this_round() -> u32 {
        MESSAGES_THIS_ROUND.with(Cell::get)
    }

    #[test]
    fn a_thread_waits_once_messages_come_fast_and_not_after_a_quiet_spell() {
        let wait = Duration::from_millis(20);
        let park = Batching {
            wait,
            min_messages: 3,
        }
        .before_park();

        note_message();
        note_message();
        assert_eq!(messages_this_round(), 2);
        let started = Instant::now();
        park();
        assert!(
            started.elapsed() < wait,
            "a thread's first sleep has no rate to go by"
        );
        assert_eq!(messages_this_round(), 0, "a park ends the round");

        for _ in 0..3 {
            note_message();
        }
        let started = Instant::now();
        park();
        assert!(
            started.elapsed() >= wait,
            "three messages at once are far above three per {wait:?}, so the thread waits"
        );

        std::thread::sleep(wait * 5);
        note_message();
        let started = Instant::now();
        park();
        assert!(
            started.elapsed() < wait,
            "one message after a quiet spell: four in two rounds that lasted some six times {wait:?}, no wait"
        );
    }

    fn round(messages: u32, micros: u64) -> Round {
        Round {
            messages,
            lasted: Duration::from_micros(micros),
        }
    }

    const DEFAULTS: Batching = Batching {
        wait: Duration::from_micros(400),
        min_messages: 4,
    };

    #[test]
    fn the_wait_follows_the_rate_and_doubles_at_twice_it() {
        let us = Duration::from_micros;
        // 4 per 400 µs is 10,000 a second; twice that doubles the wait.
        assert_eq!(DEFAULTS.wait_after(round(3, 400)), Duration::ZERO);
        assert_eq!(DEFAULTS.wait_after(round(4, 400)), us(400));
        assert_eq!(DEFAULTS.wait_after(round(7, 400)), us(400));
        assert_eq!(DEFAULTS.wait_after(round(8, 400)), us(800));
        // Saturated (the bench's Node generator: some forty messages a round of 1.1 ms).
        assert_eq!(DEFAULTS.wait_after(round(40, 1100)), us(800));
        // 5,000 a second in ticks of a millisecond: a burst of five, then its acks.
        assert_eq!(
            DEFAULTS.wait_after(round(0, 150).and(round(5, 850))),
            Duration::ZERO
        );
        assert_eq!(DEFAULTS.wait_after(round(0, 10)), Duration::ZERO);
    }

    #[test]
    fn small_rounds_in_quick_succession_still_wait() {
        // A thread that slept at once wakes for the first frame and finds two or three
        // messages: few, but at 25,000 a second. It waits, and the next rounds are full.
        let recent = round(3, 100).and(round(2, 100));
        assert_eq!(DEFAULTS.wait_after(recent), Duration::from_micros(400));
        let recent = round(15, 450).and(round(3, 100));
        assert_eq!(DEFAULTS.wait_after(recent), Duration::from_micros(800));
    }

    #[test]
    fn a_lone_message_is_not_held_back() {
        // Woken from a long sleep by one message, or by a second one just after it.
        assert_eq!(DEFAULTS.wait_after(round(1, 5_000)), Duration::ZERO);
        let recent = round(1, 30).and(round(1, 5_000));
        assert_eq!(DEFAULTS.wait_after(recent), Duration::ZERO);
        // Three messages a few microseconds apart make a high rate, but too few to wait for.
        let recent = round(1, 10).and(round(1, 10));
        assert_eq!(DEFAULTS.wait_after(recent), Duration::ZERO);
    }

    #[test]
    fn no_wait_turns_batching_off() {
        assert_eq!(Batching::OFF.wait_after(round(u32::MAX, 1)), Duration::ZERO);
        let no_wait = Batching {
            wait: Duration::ZERO,
            min_messages: 1,
        };
        assert_eq!(no_wait.wait_after(round(100, 1)), Duration::ZERO);
        // Rounds too short to time do not divide by zero: they are simply fast.
        assert_eq!(DEFAULTS.wait_after(round(8, 0)), Duration::from_micros(800));
    }

    #[test]
    fn the_caller_alone_places_everything_here() {
        let shards = Shards::caller();
        assert_eq!(shards.count(), 1);
        assert!(matches!(shards.next(), Placement::Here));
        assert!(matches!(shards.next(), Placement::Here));
    }

    #[test]
    fn connections_go_round_robin_and_run_on_their_shard() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let shards = Shards::start(3, Batching::OFF).unwrap();
            assert_eq!(shards.count(), 3);
            let mut threads = Vec::new();
            for round in 0..6 {
                let name = match shards.next() {
                    Placement::Here => {
                        assert_eq!(
                            round % 3,
                            0,
                            "the caller's runtime comes first in each round"
                        );
                        std::thread::current().name().map(str::to_owned)
                    }
                    Placement::Thread(handle) => handle
                        .spawn(async { std::thread::current().name().map(str::to_owned) })
                        .await
                        .unwrap(),
                };
                threads.push(name.unwrap_or_default());
            }
            assert_eq!(threads[1], "shard-1");
            assert_eq!(threads[2], "shard-2");
            assert_eq!(threads[1..3], threads[4..6], "the same order each round");
        });
    }
}
