//! Route rules: the minimum key level a path demands.

use std::borrow::Cow;

use hwsign_proto::api::KeyLevel;
use hwsign_proto::encoding;

use crate::config::RouteRule;

/// The level `path` demands under `rules`: for each spelling of the path (as sent,
/// percent-decoded, dot segments resolved and slashes collapsed) the longest matching prefix
/// decides, and the strictest spelling wins. `None` when no rule matches any spelling.
pub(crate) fn required_level(rules: &[RouteRule], path: &str) -> Option<KeyLevel> {
    if rules.is_empty() {
        return None;
    }
    let decoded: Cow<'_, str> = match encoding::decode(path) {
        Ok(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        // An undecodable path was already refused by canonicalization; match it as sent.
        Err(_) => Cow::Borrowed(path),
    };
    let normalized = normalize(&decoded);
    [path, decoded.as_ref(), normalized.as_str()]
        .into_iter()
        .filter_map(|form| longest_match(rules, form))
        .max()
}

fn longest_match(rules: &[RouteRule], path: &str) -> Option<KeyLevel> {
    rules
        .iter()
        .filter(|rule| path.starts_with(rule.path_prefix.as_str()))
        .max_by_key(|rule| rule.path_prefix.len())
        .map(|rule| rule.min_level)
}

/// Removes `.` and `..` segments and empty segments, keeping a trailing slash.
fn normalize(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || (path.ends_with('/') && !segments.is_empty()) {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<RouteRule> {
        vec![
            RouteRule {
                path_prefix: "/admin".into(),
                min_level: KeyLevel::Tpm,
            },
            RouteRule {
                path_prefix: "/admin/public".into(),
                min_level: KeyLevel::Software,
            },
            RouteRule {
                path_prefix: "/keys/".into(),
                min_level: KeyLevel::HardwareUnattested,
            },
        ]
    }

    #[test]
    fn longest_prefix_decides() {
        let rules = rules();
        assert_eq!(required_level(&rules, "/admin/x"), Some(KeyLevel::Tpm));
        assert_eq!(
            required_level(&rules, "/admin/public/x"),
            Some(KeyLevel::Software)
        );
        assert_eq!(
            required_level(&rules, "/keys/1"),
            Some(KeyLevel::HardwareUnattested)
        );
        assert_eq!(required_level(&rules, "/keys"), None);
        assert_eq!(required_level(&rules, "/other"), None);
    }

    #[test]
    fn other_spellings_of_a_protected_path_are_protected() {
        let rules = rules();
        for path in [
            "/%61dmin/x",
            "//admin/x",
            "/x/../admin/x",
            "/./admin",
            "/admin%2Fx",
        ] {
            assert_eq!(required_level(&rules, path), Some(KeyLevel::Tpm), "{path}");
        }
        // The weaker rule for a sub-path does not relax a spelling that also reaches /admin.
        assert_eq!(
            required_level(&rules, "/admin/public/../secret"),
            Some(KeyLevel::Tpm)
        );
    }
}
