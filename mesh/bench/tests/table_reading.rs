//! How the benchmark tests read the tables they check: every table in the output, and each
//! derived number against the rounding of the numbers it was computed from.

mod common;

use common::{Printed, tables};

#[test]
fn a_ratio_is_checked_against_the_rounding_of_what_it_came_from() {
    // 8.5 / 34.6 printed from the values before rounding lies in 0.2439..0.2475: 0.24 or 0.25.
    let (ours, theirs) = (Printed::parse("8.5"), Printed::parse("34.6"));
    assert!(Printed::parse("0.24").is_quotient_of(ours, theirs, 1.0));
    assert!(Printed::parse("0.25").is_quotient_of(ours, theirs, 1.0));
    assert!(!Printed::parse("0.27").is_quotient_of(ours, theirs, 1.0));
    assert!(Printed::parse("57%").is_quotient_of(
        Printed::parse("29289"),
        Printed::parse("51674"),
        100.0
    ));
    assert!(!Printed::parse("4.41x").is_quotient_of(
        Printed::parse("51674"),
        Printed::parse("12000"),
        1.0
    ));
}

#[test]
fn tables_are_read_with_their_rows() {
    let text = "intro\n| a | b |\n|---|---|\n| 1 | x |\n| 2 | y |\n\n| c |\n|---|\n| 3 |\n";
    let tables = tables(text);
    assert_eq!(tables.len(), 2);
    assert_eq!(tables[0].header, ["a", "b"]);
    assert_eq!(tables[0].rows, [["1", "x"], ["2", "y"]]);
    assert_eq!(tables[1].rows, [["3"]]);
}

#[test]
fn a_difference_is_checked_against_the_rounding_of_what_it_came_from() {
    // Printed whole as 1234 and 1181, the two differ by 52 to 54 before rounding.
    let (through, direct) = (Printed::parse("1234 µs"), Printed::parse("1181 µs"));
    assert!(Printed::parse("52 µs").is_difference_of(through, direct));
    assert!(Printed::parse("54 µs").is_difference_of(through, direct));
    assert!(!Printed::parse("55 µs").is_difference_of(through, direct));
    assert_eq!(Printed::parse("12.5 MiB").value, 12.5);
}
