//! Tables for people at a terminal (every `list` verb prints one).

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

/// An empty table with this header, sized to the terminal.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    table
}
