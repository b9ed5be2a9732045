//! Text from other parties (a token's `kid`, an event name, a message) made safe to repeat.
//!
//! - [`shown`]: for logs and error messages: escaped and cut to a few dozen characters, so a
//!   newline cannot forge a log line and a 700 KB name is not echoed back.
//! - [`neutralized`]: for an agent's context: the whole text, with every character that can
//!   hide or reorder what a reader sees (control characters, ANSI escapes, bidi overrides,
//!   zero-width characters, line separators) replaced by a visible `\u{..}` escape.

/// How much of an untrusted name an error or a log line repeats.
const SHOWN_CHARS: usize = 64;

/// Characters that change how text reads without being seen: C0/C1 controls (newlines and
/// ESC, which starts ANSI sequences, included), zero-width characters, line and paragraph
/// separators, bidi embeddings, overrides and isolates, and the BOM.
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

fn escape_into(out: &mut String, c: char) {
    if is_deceptive(c) {
        out.extend(c.escape_unicode());
    } else {
        out.push(c);
    }
}

/// `value` made safe to repeat in an error or a log line: deceptive characters escaped, at
/// most 64 characters, with a note of how many more there were.
pub fn shown(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars().take(SHOWN_CHARS) {
        escape_into(&mut out, c);
    }
    let total = value.chars().count();
    if total > SHOWN_CHARS {
        out.push_str(&format!("… ({} more characters)", total - SHOWN_CHARS));
    }
    out
}

/// `text` whole, with every deceptive character made visible (`\u{1b}`, `\u{202e}`, ...);
/// newlines too, so one message stays one line.
pub fn neutralized(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        escape_into(&mut out, c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_ansi_bidi_and_separators_become_visible() {
        assert_eq!(neutralized("a\nb"), "a\\u{a}b");
        assert_eq!(neutralized("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(neutralized("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(neutralized("x\u{2028}y\u{200b}z"), "x\\u{2028}y\\u{200b}z");
        assert_eq!(neutralized("héllo, 世界 🙂"), "héllo, 世界 🙂");
    }

    #[test]
    fn shown_cuts_long_values_and_says_how_much() {
        let long = "k".repeat(700_000);
        let short = shown(&long);
        assert!(short.len() < 120, "{short}");
        assert!(short.ends_with(&format!("({} more characters)", 700_000 - 64)));
        assert_eq!(shown("alpha"), "alpha");
    }
}
