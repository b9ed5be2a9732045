//! What the benchmark tests share: running a benchmark binary against the `nsh` built beside
//! it, and reading the markdown tables it prints, each number with the rounding it was printed
//! with, so a derived column can be checked against the columns it came from.

#![allow(dead_code)] // each test binary uses its part

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `nsh` binary of this build. Cargo builds it for `nsh`'s own integration tests, into the
/// directory it builds this package's benchmark binaries in, so `cargo test --workspace` (what
/// `scripts/test.sh` runs) always has it fresh. `cargo test -p nsh-mesh-bench` alone does not
/// build it: then the binary there may be missing, or older than this tree, which fails here
/// rather than measuring another server.
pub(crate) fn nsh() -> PathBuf {
    let nsh = PathBuf::from(env!("CARGO_BIN_EXE_mesh-bench")).with_file_name("nsh");
    let fix = "run these tests with `cargo test --workspace` (or `scripts/test.sh`), \
               or `cargo build -p nsh` first";
    assert!(nsh.is_file(), "{} is missing: {fix}", nsh.display());
    if let Some(why) = stale(&nsh.with_extension("d")) {
        panic!("{} is not this tree's build: {why}; {fix}", nsh.display());
    }
    nsh
}

/// Why a binary is older than the sources it was built from, by cargo's own rule: its dep-info
/// file (`nsh.d` beside `nsh`, in make's syntax) lists every file the build read, and one
/// modified since the build, or gone (built from another checkout), makes it stale. `None`
/// when the build is fresh.
pub(crate) fn stale(dep_info: &Path) -> Option<String> {
    let built = fs::metadata(dep_info).and_then(|m| m.modified());
    let text = fs::read_to_string(dep_info);
    let (Ok(built), Ok(text)) = (built, text) else {
        return Some(format!("{} is unreadable", dep_info.display()));
    };
    let Some((_, sources)) = text.split_once(": ") else {
        return Some(format!("{} lists no sources", dep_info.display()));
    };
    // Make escapes a space in a path as `\ `.
    let sources = sources.trim().replace("\\ ", "\0");
    sources
        .split_whitespace()
        .map(|source| PathBuf::from(source.replace('\0', " ")))
        .find_map(
            |source| match fs::metadata(&source).and_then(|m| m.modified()) {
                Ok(modified) if modified > built => {
                    Some(format!("{} changed since", source.display()))
                }
                Ok(_) => None,
                Err(_) => Some(format!(
                    "it was built from {}, which is not here",
                    source.display()
                )),
            },
        )
}

/// `mesh-bench` with this build's `nsh`, `node` and the official peers in `mesh/interop`.
pub(crate) fn mesh_bench() -> Command {
    let node = nsh_testenv::peers::node().expect("node and the interop packages");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_mesh-bench"));
    bench
        .arg("--nsh")
        .arg(nsh())
        .arg("--node")
        .arg(node)
        .arg("--interop-dir")
        .arg(nsh_testenv::peers::interop_dir());
    bench
}

/// Runs a benchmark to its end; panics with everything it printed unless it succeeded.
pub(crate) fn run(mut command: Command) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("start the benchmark");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    );
    assert!(
        status.success(),
        "the benchmark failed ({status}):\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

/// A number as a table printed it: the true value lies within `half_step` of `value`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Printed {
    pub(crate) value: f64,
    pub(crate) half_step: f64,
}

impl Printed {
    /// A number as printed, with or without its unit (`0.25`, `4.41x`, `57%`, `12.5 MiB`).
    pub(crate) fn parse(text: &str) -> Self {
        let number = text.split_whitespace().next().unwrap_or_default();
        let digits = number.trim_end_matches(['x', '%']);
        let value: f64 = digits
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {text:?}"));
        let decimals = digits.split_once('.').map_or(0, |(_, d)| d.len());
        Self {
            value,
            half_step: 0.5 * 10f64.powi(-(decimals as i32)),
        }
    }

    /// Whether `self`, printed from `numerator / denominator * scale`, agrees with the two
    /// printed numbers it was computed from.
    pub(crate) fn is_quotient_of(self, numerator: Self, denominator: Self, scale: f64) -> bool {
        let low = scale * (numerator.value - numerator.half_step).max(0.0)
            / (denominator.value + denominator.half_step);
        let high = if denominator.value - denominator.half_step > 0.0 {
            scale * (numerator.value + numerator.half_step)
                / (denominator.value - denominator.half_step)
        } else {
            f64::INFINITY
        };
        self.value + self.half_step >= low && self.value - self.half_step <= high
    }

    /// Whether `self`, printed from `minuend - subtrahend`, agrees with the two printed numbers
    /// it was computed from.
    pub(crate) fn is_difference_of(self, minuend: Self, subtrahend: Self) -> bool {
        let slack = minuend.half_step + subtrahend.half_step + self.half_step;
        (self.value - (minuend.value - subtrahend.value)).abs() <= slack + 1e-9
    }
}

/// One markdown table: its header's cells and its rows' cells.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Table {
    /// The first table whose first header cells start with `first_cells`.
    pub(crate) fn find<'a>(tables: &'a [Table], first_cells: &[&str]) -> &'a Table {
        tables
            .iter()
            .find(|t| {
                t.header.len() >= first_cells.len()
                    && t.header
                        .iter()
                        .zip(first_cells)
                        .all(|(h, want)| h.starts_with(want))
            })
            .unwrap_or_else(|| panic!("no table starting {first_cells:?} in {tables:#?}"))
    }

    /// The index of the column whose header starts with `name`.
    pub(crate) fn column(&self, name: &str) -> usize {
        self.header
            .iter()
            .position(|h| h.starts_with(name))
            .unwrap_or_else(|| panic!("no column {name:?} in {:?}", self.header))
    }

    pub(crate) fn cell<'a>(&self, row: &'a [String], column: &str) -> &'a str {
        &row[self.column(column)]
    }

    pub(crate) fn number(&self, row: &[String], column: &str) -> Printed {
        Printed::parse(self.cell(row, column))
    }

    /// The rows whose `column` reads `value`.
    pub(crate) fn rows_where(&self, column: &str, value: &str) -> Vec<&Vec<String>> {
        let index = self.column(column);
        self.rows.iter().filter(|row| row[index] == value).collect()
    }
}

/// Every markdown table in `text`: a header line, a `|---|` line, and rows.
pub(crate) fn tables(text: &str) -> Vec<Table> {
    let cells = |line: &str| -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split('|').map(|c| c.trim().to_owned()).collect()
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut tables = Vec::new();
    let mut i = 0;
    while i + 1 < lines.len() {
        if lines[i].starts_with('|') && lines[i + 1].starts_with("|---") {
            let header = cells(lines[i]);
            let mut rows = Vec::new();
            i += 2;
            while i < lines.len() && lines[i].starts_with('|') {
                let row = cells(lines[i]);
                assert_eq!(
                    row.len(),
                    header.len(),
                    "a row with other columns than its header: {}",
                    lines[i]
                );
                rows.push(row);
                i += 1;
            }
            tables.push(Table { header, rows });
        } else {
            i += 1;
        }
    }
    tables
}
