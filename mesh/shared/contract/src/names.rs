//! Team, agent and group names. They end up in room names, Kubernetes objects and file names,
//! so they are held to one safe alphabet: `[A-Za-z0-9._-]`, 1 to 63 characters, starting with
//! a letter or digit.

/// Longest name accepted; also the DNS label limit, so names fit Kubernetes objects.
pub const MAX_NAME_LEN: usize = 63;

/// [`check`] as a regular expression, for schemas (the CRDs' `name` fields); a test holds the
/// two to the same answers.
pub const PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$";

/// Which bytes a name may contain after its first.
const NAME_BYTES: [bool; 256] = ascii_alphanumeric_and(b"._-");

/// A table of the bytes that are ASCII letters or digits or in `extra`. Checks that run on
/// every message look each byte up rather than compare it against each range: the separators'
/// positions (a UUID's dashes) otherwise cost a branch misprediction each.
pub const fn ascii_alphanumeric_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = (byte as u8).is_ascii_alphanumeric();
        byte += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

/// Why `name` is not a valid team, agent or group name, or `None` if it is.
pub fn check(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Some("must be at most 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("must start with a letter or digit");
    }
    // Bytes, not chars: every allowed character is ASCII, and a non-ASCII character's bytes
    // are all refused as well.
    if !name.bytes().all(|b| NAME_BYTES[usize::from(b)]) {
        return Some("may only contain letters, digits, '.', '_' and '-'");
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The schema's pattern and the function agree on every string, near-misses included.
        #[test]
        fn the_pattern_and_check_agree(name in "[A-Za-z0-9._:ä -]{0,70}") {
            let pattern = regex::Regex::new(PATTERN).unwrap();
            prop_assert_eq!(pattern.is_match(&name), check(&name).is_none(), "{:?}", name);
        }
    }

    #[test]
    fn the_byte_table_holds_letters_digits_and_the_extras_only() {
        let table = ascii_alphanumeric_and(b"._-");
        for byte in 0..=255u8 {
            let expected = byte.is_ascii_alphanumeric() || b"._-".contains(&byte);
            assert_eq!(table[usize::from(byte)], expected, "byte {byte}");
        }
    }

    #[test]
    fn accepts_safe_names_and_rejects_the_rest() {
        for ok in ["alpha", "agent-1", "a.b_c", "0"] {
            assert_eq!(check(ok), None, "{ok}");
        }
        for bad in ["", "-x", "a:b", "a b", "ä", &"x".repeat(64)] {
            assert!(check(bad).is_some(), "{bad:?} accepted");
        }
    }
}
