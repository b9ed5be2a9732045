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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// single-threaded runtime. Meant for a caller on a single-threaded runtime itself.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut runtimes = vec![None];
        let mut stops = Vec::new();
        for index in 1..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let shards = Shards::start(3).unwrap();
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
