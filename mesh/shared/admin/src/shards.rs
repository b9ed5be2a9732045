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
use std::time::Duration;

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

/// How a shard's thread goes to sleep when it runs out of work: at once, or, after a busy
/// round, once it has waited for more work to arrive.
///
/// A thread that runs out of work sleeps in `epoll_wait`, and the next frame wakes it again: a
/// context switch, and a read and a write for the few frames that came in meanwhile. When the
/// clients keep the server nearly but not fully busy, that waking costs more than relaying the
/// messages themselves (docs/mesh-server.md, "CPU per relayed message"): NIC interrupt
/// moderation's problem. The same answer: after a round that handled at least `min_messages`
/// messages (as [`note_message`] counted them), the thread first waits `wait` off the CPU,
/// then takes everything that arrived in one wake-up. After a quieter round it sleeps at once,
/// so a lone message is never held back.
///
/// After a full round ([`FULL_ROUND`] times `min_messages`) it waits twice as long. Rounds
/// that full come when the clients keep the thread busy (near saturation, or tens of thousands
/// of messages a second), and then how long a round lasts sets how many wake-ups each message
/// costs; under a moderate load (a round of a handful of messages) the shorter wait keeps the
/// latency it adds small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// How long to wait after a busy round; zero turns batching off.
    pub wait: Duration,
    /// How many messages make a round busy.
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
            let handled = MESSAGES_THIS_ROUND.with(|count| count.replace(0));
            let wait = self.wait_after(handled);
            if !wait.is_zero() {
                // Off the CPU, not spinning: a wait that burned CPU would cost what it saves.
                std::thread::sleep(wait);
            }
        }
    }

    fn is_busy(self, handled: u32) -> bool {
        !self.wait.is_zero() && handled >= self.min_messages
    }

    /// How long to wait after a round that handled `handled` messages (zero: sleep at once).
    fn wait_after(self, handled: u32) -> Duration {
        if !self.is_busy(handled) {
            Duration::ZERO
        } else if handled >= self.min_messages.saturating_mul(FULL_ROUND) {
            self.wait.saturating_mul(2)
        } else {
            self.wait
        }
    }
}

/// A round of this many times [`Batching::min_messages`] is full: the next wait is doubled.
/// With the defaults (4 messages, 400 µs), a full round is 8 messages. The Node load generator
/// of `scripts/bench-mesh.sh` keeps the thread nearly saturated, and with 16 or 12 some runs
/// stayed at 400 µs (twice the context switches per message); 5,000 messages a second in ticks
/// of a millisecond make rounds of about 5, and mostly keep the short wait
/// (docs/mesh-server.md, "Eighth round").
pub const FULL_ROUND: u32 = 2;

impl Default for Batching {
    fn default() -> Self {
        Self::OFF
    }
}

thread_local! {
    /// Messages handled on this thread since it last went to sleep.
    static MESSAGES_THIS_ROUND: Cell<u32> = const { Cell::new(0) };
}

/// Counts one message handled on this thread, for [`Batching`]'s idea of a busy round.
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
    fn only_a_busy_round_waits_and_each_park_starts_a_new_round() {
        let wait = Duration::from_millis(20);
        let park = Batching {
            wait,
            min_messages: 3,
        }
        .before_park();

        note_message();
        note_message();
        assert_eq!(messages_this_round(), 2);
        park();
        assert_eq!(messages_this_round(), 0, "a park ends the round");

        for _ in 0..3 {
            note_message();
        }
        let started = std::time::Instant::now();
        park();
        assert!(
            started.elapsed() >= wait,
            "three messages make a busy round, which waits {wait:?} before the thread sleeps"
        );
        assert_eq!(messages_this_round(), 0);
    }

    #[test]
    fn busy_needs_both_a_wait_and_enough_messages() {
        let batching = Batching {
            wait: Duration::from_micros(200),
            min_messages: 4,
        };
        assert!(!batching.is_busy(3));
        assert!(batching.is_busy(4));
        assert!(!Batching::OFF.is_busy(u32::MAX));
        let no_wait = Batching {
            wait: Duration::ZERO,
            min_messages: 1,
        };
        assert!(!no_wait.is_busy(100), "a zero wait turns batching off");
    }

    #[test]
    fn a_full_round_waits_twice_as_long() {
        let batching = Batching {
            wait: Duration::from_micros(400),
            min_messages: 4,
        };
        assert_eq!(batching.wait_after(3), Duration::ZERO);
        assert_eq!(batching.wait_after(4), Duration::from_micros(400));
        assert_eq!(batching.wait_after(7), Duration::from_micros(400));
        assert_eq!(batching.wait_after(8), Duration::from_micros(800));
        assert_eq!(batching.wait_after(u32::MAX), Duration::from_micros(800));
        assert_eq!(Batching::OFF.wait_after(u32::MAX), Duration::ZERO);
        let no_wait = Batching {
            wait: Duration::ZERO,
            min_messages: 1,
        };
        assert_eq!(no_wait.wait_after(100), Duration::ZERO);
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
