//! Exposed names: every upstream's tools and prompts become `<upstream>__<name>` in one
//! endpoint. MCP clients accept tool names of 1 to 128 characters from `[A-Za-z0-9_.-]`, so
//! other characters become `_` and long names are cut; the gateway keeps a table from exposed
//! names back to the original ones, and upstream names never contain `__`, so the upstream of
//! an exposed name is the part before its first `__`.

/// Separator between the upstream and the original name.
pub const SEPARATOR: &str = "__";
/// Longest exposed name (what MCP clients accept for tool names).
pub const MAX_EXPOSED_LEN: usize = 128;
/// Longest upstream name, so exposed names keep room for the original.
pub const MAX_UPSTREAM_LEN: usize = 31;

/// Why `name` cannot name an upstream, or `None`.
pub fn check_upstream(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.len() > MAX_UPSTREAM_LEN {
        return Some("must be at most 31 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("must start with a letter or digit");
    }
    if !name.chars().all(allowed) {
        return Some("may only contain letters, digits, '.', '_' and '-'");
    }
    if name.contains(SEPARATOR) || name.ends_with('_') {
        return Some("must not contain `__` or end with `_` (the separator of exposed names)");
    }
    None
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The name the gateway's callers see for `original` of `upstream`.
pub fn exposed(upstream: &str, original: &str) -> String {
    let mut name = String::with_capacity(upstream.len() + SEPARATOR.len() + original.len());
    name.push_str(upstream);
    name.push_str(SEPARATOR);
    name.extend(original.chars().map(|c| if allowed(c) { c } else { '_' }));
    if original.is_empty() {
        name.push('_');
    }
    name.truncate(MAX_EXPOSED_LEN);
    name
}

/// The upstream an exposed name belongs to.
pub fn upstream_of(exposed: &str) -> Option<&str> {
    exposed.split_once(SEPARATOR).map(|(upstream, _)| upstream)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn plain_names_are_prefixed_and_odd_ones_cleaned() {
        assert_eq!(exposed("github", "create_issue"), "github__create_issue");
        assert_eq!(exposed("fs", "read file/ä"), "fs__read_file__");
        assert_eq!(exposed("x", ""), "x___");
        assert_eq!(upstream_of("github__create__issue"), Some("github"));
        assert_eq!(upstream_of("nothing"), None);
        assert!(check_upstream("git_hub").is_none());
        assert!(check_upstream("a__b").is_some());
        assert!(check_upstream("a_").is_some());
    }

    proptest! {
        /// Whatever an upstream calls a tool, the exposed name is one MCP clients accept and
        /// leads back to the upstream.
        #[test]
        fn exposed_names_are_valid_and_lead_back(
            upstream in "[A-Za-z0-9]([A-Za-z0-9.-]|_[A-Za-z0-9.-]){0,14}",
            original in "\\PC{0,200}",
        ) {
            prop_assert!(check_upstream(&upstream).is_none());
            let name = exposed(&upstream, &original);
            prop_assert!(!name.is_empty() && name.len() <= MAX_EXPOSED_LEN);
            prop_assert!(name.chars().all(allowed), "{}", name);
            prop_assert_eq!(upstream_of(&name), Some(upstream.as_str()));
        }

        /// The schema's pattern and the function agree.
        #[test]
        fn the_schema_pattern_matches_the_check(name in "[A-Za-z0-9_.-]{0,40}") {
            let pattern = regex_lite(&name);
            prop_assert_eq!(pattern, check_upstream(&name).is_none(), "{}", name);
        }
    }

    /// `^[A-Za-z0-9]([A-Za-z0-9.-]|_[A-Za-z0-9.-]){0,30}$` with `maxLength: 31`, by hand.
    fn regex_lite(name: &str) -> bool {
        let bytes = name.as_bytes();
        if bytes.len() > MAX_UPSTREAM_LEN {
            return false;
        }
        let Some(first) = bytes.first() else {
            return false;
        };
        if !first.is_ascii_alphanumeric() {
            return false;
        }
        let mut units = 0;
        let mut i = 1;
        while i < bytes.len() {
            let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
            if plain(bytes[i]) {
                i += 1;
            } else if bytes[i] == b'_' && i + 1 < bytes.len() && plain(bytes[i + 1]) {
                i += 2;
            } else {
                return false;
            }
            units += 1;
        }
        units <= 30
    }
}
