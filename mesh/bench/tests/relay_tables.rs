//! `mesh-bench`, one short run of every phase against `nsh mesh server` and the official Node
//! server with all three load generators: every measurement comes out whole (messages relayed,
//! none failed), and the ratio and target tables are computed from the rows printed above them.
//! No speed is asserted here: that is what the benchmark is for.

mod common;

use common::{Printed, Table, mesh_bench, run, tables};

const RATE: u64 = 200;

#[test]
fn every_phase_runs_and_the_derived_tables_follow_from_the_measured_rows() {
    let mut bench = mesh_bench();
    bench
        .args(["--runs", "1", "--duration", "1s", "--connections", "100"])
        .args(["--rate", &RATE.to_string()]);
    let out = run(bench);
    let tables = tables(&out);

    let generators = [
        "rust client",
        "node socket.io-client",
        "node socket.io-client, 2 threads",
    ];
    let relay = Table::find(&tables, &["run", "load generator", "server", "msg/s"]);
    assert_eq!(relay.rows.len(), 2 * generators.len(), "{out}");
    for row in &relay.rows {
        assert!(relay.number(row, "msg/s").value > 0.0, "{row:?}");
        assert!(relay.number(row, "server CPU").value > 0.0, "{row:?}");
        assert!(relay.number(row, "generator CPU").value > 0.0, "{row:?}");
        assert_eq!(relay.cell(row, "failed"), "0", "{row:?}");
        let (p50, p99) = (relay.number(row, "p50"), relay.number(row, "p99"));
        assert!(0.0 < p50.value && p50.value <= p99.value, "{row:?}");
    }
    // One row per server and generator, so each ratio below has its two rows.
    let row_of = |generator: &str, server: &str| {
        let rows: Vec<_> = relay
            .rows_where("load generator", generator)
            .into_iter()
            .filter(|row| relay.cell(row, "server") == server)
            .collect();
        assert_eq!(rows.len(), 1, "{generator} on {server}: {out}");
        rows[0]
    };

    let ratios = Table::find(&tables, &["run", "load generator", "CPU/msg"]);
    let met = Table::find(&tables, &["load generator", "runs"]);
    assert_eq!(ratios.rows.len(), generators.len(), "{out}");
    assert_eq!(met.rows.len(), generators.len(), "{out}");
    // (ratio column, the relay table's column it divides, its target)
    let targets = [
        ("CPU/msg nsh/node <= 0.33", "server CPU", 0.33),
        ("ctx switches/msg nsh/node <= 1", "ctx switches", 1.0),
        ("p99 nsh/node <= 0.5", "p99", 0.5),
    ];
    for generator in generators {
        let (ours, theirs) = (row_of(generator, "nsh"), row_of(generator, "node"));
        let ratio_row = ratios
            .rows_where("load generator", generator)
            .first()
            .copied()
            .expect("a ratio row per generator");
        let met_row = met
            .rows_where("load generator", generator)
            .first()
            .copied()
            .expect("a target row per generator");
        assert_eq!(met.cell(met_row, "runs"), "1");
        for (column, measured, at_most) in targets {
            let ratio = ratios.number(ratio_row, column);
            assert!(
                ratio.is_quotient_of(
                    relay.number(ours, measured),
                    relay.number(theirs, measured),
                    1.0
                ),
                "{generator}: {column} {ratio:?} is not nsh's {measured} over node's: {out}"
            );
            let counted = if ratio.value <= at_most {
                "1 of 1"
            } else {
                "0 of 1"
            };
            assert_eq!(met.cell(met_row, column), counted, "{generator}: {column}");
        }
        assert!(
            ratios.number(ratio_row, "msg/s nsh/node").is_quotient_of(
                relay.number(ours, "msg/s"),
                relay.number(theirs, "msg/s"),
                1.0
            ),
            "{generator}: msg/s ratio: {out}"
        );
        // With one run, the median core count is that run's.
        let cores = format!(
            "{} / {}",
            relay.cell(ours, "generator CPU"),
            relay.cell(theirs, "generator CPU")
        );
        assert_eq!(met.cell(met_row, "generator CPU"), cores, "{generator}");
    }

    let metrics = Table::find(&tables, &["metric", "nsh mesh server"]);
    let metric = |name: &str| {
        metrics
            .rows
            .iter()
            .find(|row| row[0].starts_with(name))
            .unwrap_or_else(|| panic!("no metric {name:?}: {out}"))
    };
    for name in [
        "p50 send->ack latency at --rate",
        "p99 send->ack latency at --rate",
        "p50 send->ack at --rate, node socket.io-client",
        "p99 send->ack at --rate, node socket.io-client",
        "KiB per idle connection (100 teams)",
        "KiB per idle connection (one team)",
        "server RSS with all idle connections",
    ] {
        let row = metric(name);
        let (ours, theirs) = (
            metrics.number(row, "nsh mesh server"),
            metrics.number(row, "node socket.io 4.8"),
        );
        assert!(ours.value > 0.0 && theirs.value > 0.0, "{row:?}");
        let ratio = metrics.cell(row, "nsh vs node");
        let ratio = Printed::parse(ratio.trim_end_matches(" of node"));
        assert!(ratio.is_quotient_of(ours, theirs, 1.0), "{row:?}");
    }
    // The latency phase sent its whole rate for the duration from the Rust client and lost
    // none; the Node client's open loop lost none either.
    let phase = metric("latency phase");
    for server in ["nsh mesh server", "node socket.io 4.8"] {
        let text = metrics.cell(phase, server);
        assert!(
            text.starts_with(&format!("{RATE} sent, 0 failed; node socket.io-client ")),
            "{server}: {text}"
        );
        assert!(text.ends_with(" msg/s acked, 0 failed"), "{server}: {text}");
    }
}
