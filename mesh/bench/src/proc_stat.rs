//! What a process has used, from `/proc/<pid>/stat`: the benchmarks report each server's own
//! CPU, since the load generator shares the machine's cores.

/// CPU seconds (user + system) the process has used.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

/// Context switches (voluntary and involuntary) of all the process's threads so far: a thread's
/// own `status` counts only it, so the threads are summed.
#[allow(dead_code)] // not every benchmark binary reports it
pub(crate) fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// A process's CPU time and context switches at one moment, to take differences of.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) cpu_seconds: f64,
    pub(crate) context_switches: u64,
}

#[allow(dead_code)]
impl Sample {
    pub(crate) fn of(pid: u32) -> Self {
        Self {
            cpu_seconds: cpu_seconds(pid),
            context_switches: context_switches(pid),
        }
    }
}
