//! Team, agent and group names. They end up in room names, Kubernetes objects and file names,
//! so they are held to one safe alphabet: `[A-Za-z0-9._-]`, 1 to 63 characters, starting with
//! a letter or digit.

/// Longest name accepted; also the DNS label limit, so names fit Kubernetes objects.
pub const MAX_NAME_LEN: usize = 63;

/// [`check`] as a regular expression, for schemas (the CRDs' `name` fields); a test holds the
/// two to the same answers.
pub const PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$";

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
    // Bytes, not chars (every allowed character is ASCII): this runs for every message.
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
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
    fn accepts_safe_names_and_rejects_the_rest() {
        for ok in ["alpha", "agent-1", "a.b_c", "0"] {
            assert_eq!(check(ok), None, "{ok}");
        }
        for bad in ["", "-x", "a:b", "a b", "ä", &"x".repeat(64)] {
            assert!(check(bad).is_some(), "{bad:?} accepted");
        }
    }
}
