//! `mesh-bench --scenario replicas`, one short run: two replicas on one Redis for each contender
//! (nsh with and without persistence, Node with each Redis adapter) relay messages with none
//! lost, and the ratios and the two goals' counts are computed from the rows printed above
//! them. No speed is asserted here: that is what the benchmark is for.

mod common;

use common::{Printed, Table, mesh_bench, run, tables};

#[test]
fn every_contender_relays_across_replicas_and_the_goals_follow_from_the_rows() {
    let mut bench = mesh_bench();
    bench
        .args(["--scenario", "replicas", "--runs", "1", "--duration", "1s"])
        .args(["--rate", "200"]);
    let out = run(bench);
    let tables = tables(&out);

    let table = Table::find(&tables, &["run", "server", "direct msgs/s"]);
    let contenders = [
        "nsh --redis",
        "nsh --redis --persistence",
        "node + redis-adapter",
        "node + redis-streams-adapter",
    ];
    let servers: Vec<&str> = table
        .rows
        .iter()
        .map(|row| table.cell(row, "server"))
        .collect();
    assert_eq!(servers, contenders, "{out}");
    let throughput = |server: &str| table.number(table.rows_where("server", server)[0], "direct");
    for row in &table.rows {
        assert!(table.number(row, "direct").value > 0.0, "{row:?}");
        assert!(table.number(row, "CPU").value > 0.0, "{row:?}");
        assert_eq!(table.cell(row, "latency-phase failures"), "0", "{row:?}");
        let (p50, p99) = (table.number(row, "p50"), table.number(row, "p99"));
        assert!(0.0 < p50.value && p50.value <= p99.value, "{row:?}");
        let ratio = table.number(row, "vs node + redis-adapter");
        assert!(
            ratio.is_quotient_of(
                table.number(row, "direct"),
                throughput("node + redis-adapter"),
                1.0
            ),
            "{row:?}: {out}"
        );
    }

    // The two goals' lines: each run's ratio as in the table, counted against its goal.
    let line = |start: &str| {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?}: {out}"))
    };
    let times_node = line("nsh --redis vs node + redis-adapter, per run: ");
    let ratio = table.cell(table.rows_where("server", "nsh --redis")[0], "vs node");
    let counted = if Printed::parse(ratio).value >= 3.0 {
        1
    } else {
        0
    };
    assert_eq!(
        times_node,
        format!(
            "nsh --redis vs node + redis-adapter, per run: {ratio} (at least 3x in {counted} of 1)"
        )
    );
    let kept_line = line("persistence keeps, per run: ");
    let kept = kept_line
        .trim_start_matches("persistence keeps, per run: ")
        .split_once(' ')
        .map(|(percent, _)| Printed::parse(percent))
        .expect("a percentage");
    assert!(
        kept.is_quotient_of(
            throughput("nsh --redis --persistence"),
            throughput("nsh --redis"),
            100.0
        ),
        "{kept_line}: {out}"
    );
    let counted = if kept.value >= 50.0 { 1 } else { 0 };
    assert!(
        kept_line.ends_with(&format!(
            "of the throughput without it (at least half in {counted} of 1)"
        )),
        "{kept_line}"
    );
}
