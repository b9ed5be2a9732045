//! The pinned tool versions, read from `scripts/versions.env` at compile time so the harness
//! and the build script always agree on which binaries belong to this checkout.

const VERSIONS_ENV: &str = include_str!("../../../scripts/versions.env");

/// Version of kube-apiserver, kube-controller-manager and kubectl, e.g. `v1.36.3`.
pub fn kubernetes() -> &'static str {
    lookup("KUBERNETES_VERSION")
}

/// Version of etcd, e.g. `v3.6.8`.
pub fn etcd() -> &'static str {
    lookup("ETCD_VERSION")
}

/// Version of helm, e.g. `v3.20.2`.
pub fn helm() -> &'static str {
    lookup("HELM_VERSION")
}

/// Tag of the pause (pod sandbox) image the test node's containerd uses, e.g. `3.10.2`.
pub fn pause() -> &'static str {
    lookup("PAUSE_VERSION")
}

fn lookup(key: &str) -> &'static str {
    parse(VERSIONS_ENV, key).unwrap_or_else(|| panic!("scripts/versions.env has no {key}="))
}

/// The value of `KEY=value` in an env file; comments and blank lines are ignored.
fn parse<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(|value| value.trim().trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_ignores_comments_and_prefixes() {
        let text =
            "# KUBERNETES_VERSION=v0\nKUBERNETES_VERSION_X=v9\n KUBERNETES_VERSION=\"v1.36.3\"\n";
        assert_eq!(parse(text, "KUBERNETES_VERSION"), Some("v1.36.3"));
        assert_eq!(parse(text, "ETCD_VERSION"), None);
    }

    #[test]
    fn pinned_versions_are_the_supported_lines() {
        assert!(kubernetes().starts_with("v1."), "{}", kubernetes());
        let minor: u32 = kubernetes().split('.').nth(1).unwrap().parse().unwrap();
        assert!(
            minor >= 34,
            "the apiserver must be v1.34 or newer, got {}",
            kubernetes()
        );
        assert!(
            etcd().starts_with("v3.6."),
            "etcd must be 3.6.x, got {}",
            etcd()
        );
        assert!(helm().starts_with("v3."), "{}", helm());
    }
}
