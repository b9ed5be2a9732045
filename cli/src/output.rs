//! `-o table|json|yaml`: every verb that prints a table can print the same data for scripts.

use std::io::Write;

use clap::{Args, ValueEnum};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// A table (or lines) for people.
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The same as `-o json` (kept for scripts written before `-o`).
    #[arg(long, hide = true)]
    json: bool,
}

impl OutputArg {
    pub(crate) fn format(self) -> Format {
        if self.json { Format::Json } else { self.format }
    }

    /// Writes `data` as JSON or YAML; `false` for the table format (the caller prints it).
    pub(crate) fn write_data(
        self,
        out: &mut impl Write,
        data: &impl Serialize,
    ) -> anyhow::Result<bool> {
        match self.format() {
            Format::Table => Ok(false),
            Format::Json => {
                writeln!(out, "{}", serde_json::to_string_pretty(data)?)?;
                Ok(true)
            }
            Format::Yaml => {
                let text = serde_saphyr::to_string(data)?;
                write!(out, "{text}")?;
                if !text.ends_with('\n') {
                    writeln!(out)?;
                }
                Ok(true)
            }
        }
    }
}
