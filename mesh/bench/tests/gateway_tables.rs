//! `gateway-bench`, one short run: the same MCP server answers calls directly and through
//! `nsh gateway run`, and the differences, ratios and medians are computed from the numbers
//! printed beside them. No speed is asserted here: that is what the benchmark is for.

mod common;

use std::process::Command;

use common::{Printed, nsh, run};

#[test]
fn direct_and_gateway_calls_answer_and_the_derived_columns_follow_from_the_rows() {
    let sessions = [1, 4];
    let mut bench = Command::new(env!("CARGO_BIN_EXE_gateway-bench"));
    bench
        .arg("--nsh")
        .arg(nsh())
        .args(["--duration", "500ms", "--runs", "1", "--sessions"])
        .arg(sessions.map(|n| n.to_string()).join(","));
    let out = run(bench);

    // "run sessions | direct p50 p99 calls/s | gateway p50 p99 calls/s | added p50 p99 |
    // throughput ratio | gateway CPU µs/call", one row per session count.
    let header = out
        .lines()
        .position(|l| l.starts_with("run sessions |"))
        .unwrap_or_else(|| panic!("no table: {out}"));
    let rows: Vec<Vec<Vec<&str>>> = out
        .lines()
        .skip(header + 1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            l.split('|')
                .map(|g| g.split_whitespace().collect())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), sessions.len(), "{out}");
    for (row, sessions) in rows.iter().zip(sessions) {
        let n = |group: usize, i: usize| Printed::parse(row[group][i]);
        assert_eq!(row[0], ["1", &sessions.to_string()], "{out}");
        let (direct, gateway) = ((n(1, 0), n(1, 1), n(1, 2)), (n(2, 0), n(2, 1), n(2, 2)));
        for (p50, p99, calls_per_s) in [direct, gateway] {
            assert!(0.0 < p50.value && p50.value <= p99.value, "{row:?}");
            assert!(calls_per_s.value > 0.0, "{row:?}");
        }
        let (added_p50, added_p99) = (n(3, 0), n(3, 1));
        assert!(added_p50.is_difference_of(gateway.0, direct.0), "{row:?}");
        assert!(added_p99.is_difference_of(gateway.1, direct.1), "{row:?}");
        assert!(n(4, 0).is_quotient_of(gateway.2, direct.2, 1.0), "{row:?}");
        let cpu = n(5, 0);
        assert!(cpu.value > 0.0, "{row:?}");

        // With one run, each median is that run's value.
        let median = format!(
            "sessions {sessions:>3}: added p50 {} µs, added p99 {} µs, throughput ",
            row[3][0], row[3][1]
        );
        let line = out
            .lines()
            .find(|l| l.starts_with(&median))
            .unwrap_or_else(|| panic!("no line {median:?}: {out}"));
        let (percent, cpu_text) = line
            .trim_start_matches(&median)
            .split_once("% of direct, gateway CPU ")
            .expect("throughput and CPU");
        assert!(
            Printed::parse(percent).is_quotient_of(gateway.2, direct.2, 100.0),
            "{line}"
        );
        assert_eq!(cpu_text, format!("{} µs/call", row[5][0]), "{line}");
    }
}
