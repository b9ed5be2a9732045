//! Tables for people at a terminal (every `list` verb prints one).

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

/// An empty table with this header, sized to the terminal.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    // A terminal that reports no size (a fresh pseudo-terminal) would squeeze every column to
    // one character: print at full width instead.
    if table.width().is_some_and(|columns| columns < 20) {
        table.set_content_arrangement(ContentArrangement::Disabled);
    }
    table
}
