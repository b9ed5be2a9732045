//! Resident memory of processes, from `/proc` (Linux; elsewhere the numbers are zero).

use std::path::Path;

/// VmRSS of one process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The process group of a process, from `/proc/<pid>/stat` (the field after the state).
pub fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Every process in the group `group` leads.
pub fn group_members(group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(Path::new("/proc")) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_group(*pid) == Some(group))
        .collect()
}

/// Resident memory of a process group, in bytes.
pub fn group_rss_bytes(group: u32) -> u64 {
    group_members(group).into_iter().filter_map(rss_bytes).sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_memory_and_a_group() {
        let me = std::process::id();
        assert!(super::rss_bytes(me).is_some_and(|bytes| bytes > 1024 * 1024));
        let group = super::process_group(me).expect("a group");
        assert!(super::group_members(group).contains(&me));
    }
}
