//! `daemon-bench`, one short run: clients with their own MCP server and clients sharing one
//! through `nsh mcp run-once` all start and answer, and the ratios, differences and medians are
//! computed from the rows printed beside them. No speed or size is asserted here beyond what
//! must hold (two servers take more memory than one): that is what the benchmark is for.

mod common;

use std::process::Command;

use common::{Printed, Table, nsh, run, tables};

#[test]
fn own_and_shared_servers_answer_and_the_derived_columns_follow_from_the_rows() {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_daemon-bench"));
    bench.arg("--nsh").arg(nsh()).args([
        "--clients",
        "2",
        "--calls",
        "1000",
        "--runs",
        "1",
        "--ballast-mb",
        "0",
    ]);
    let out = run(bench);
    let tables = tables(&out);

    let memory = Table::find(&tables, &["server", "run", "1 server RSS"]);
    let runs: Vec<&str> = memory.rows.iter().map(|r| memory.cell(r, "run")).collect();
    assert_eq!(runs, ["1", "median"], "{out}");
    // With one run, its median is that run.
    assert_eq!(memory.rows[0][2..], memory.rows[1][2..], "{out}");
    let row = &memory.rows[0];
    let one = memory.number(row, "1 server RSS");
    let separate = memory.number(row, "2 servers RSS");
    assert!(one.value > 0.0 && separate.value > one.value, "{row:?}");
    for (ratio, shared, alone) in [
        ("shared / 1 (RSS)", "shared RSS", "1 server RSS"),
        ("shared / 1 (PSS)", "shared PSS", "1 server PSS"),
    ] {
        assert!(
            memory.number(row, ratio).is_quotient_of(
                memory.number(row, shared),
                memory.number(row, alone),
                1.0
            ),
            "{ratio}: {row:?}"
        );
    }
    let own_shared = |column: &str| {
        let cell = memory.cell(row, column);
        let (own, shared) = cell.split_once(" / ").expect("own / shared");
        (Printed::parse(own), Printed::parse(shared))
    };
    let (p50, max) = (
        own_shared("first tools/list p50"),
        own_shared("max, own / shared"),
    );
    assert!(
        0.0 < p50.0.value && p50.0.value <= max.0.value,
        "own: {row:?}"
    );
    assert!(
        0.0 < p50.1.value && p50.1.value <= max.1.value,
        "shared: {row:?}"
    );

    let calls = Table::find(&tables, &["run", "direct p50"]);
    let runs: Vec<&str> = calls.rows.iter().map(|r| calls.cell(r, "run")).collect();
    assert_eq!(runs, ["1", "median"], "{out}");
    assert_eq!(calls.rows[0][1..], calls.rows[1][1..], "{out}");
    let row = &calls.rows[0];
    for quantile in ["p50", "p99"] {
        let direct = calls.number(row, &format!("direct {quantile}"));
        let shared = calls.number(row, &format!("shared {quantile}"));
        assert!(direct.value > 0.0 && shared.value > 0.0, "{row:?}");
        assert!(
            calls
                .number(row, &format!("added {quantile}"))
                .is_difference_of(shared, direct),
            "added {quantile}: {row:?}"
        );
    }
    // 1,100 calls take the daemon several of /proc's 10 ms ticks.
    let daemon = calls.number(row, "daemon CPU/call");
    assert!(daemon.value > 0.0, "{row:?}");
    // The bridge hands its stdio to the daemon, so it spends next to nothing per call
    // (docs/daemon.md): never more than the daemon that serves the calls.
    let bridge = calls.number(row, "bridge CPU/call");
    assert!(bridge.value <= daemon.value, "{row:?}");
    // With one run, the median of the per-run differences is that run's difference.
    let added = calls.cell(row, "added p50").trim_end_matches(" µs");
    assert!(
        out.contains(&format!(
            "(added = medians' difference; the median of per-run differences is {added} µs at p50)"
        )),
        "{out}"
    );
}
