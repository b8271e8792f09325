//! Route rules: the minimum key level a path demands, and whether it demands strict mode.

use hwsign_proto::api::KeyLevel;

use crate::config::{PresignPolicy, RouteRule};
use crate::path_spellings::path_spellings;

/// The level `path` demands under `rules`: for each spelling of the path (as sent,
/// percent-decoded, dot segments resolved and slashes collapsed) the longest matching prefix
/// decides, and the strictest spelling wins. `None` when no rule matches any spelling.
pub(crate) fn required_level(rules: &[RouteRule], path: &str) -> Option<KeyLevel> {
    if rules.is_empty() {
        return None;
    }
    path_spellings(path)
        .iter()
        .filter_map(|form| longest_match(rules, form).map(|rule| rule.min_level))
        .max()
}

/// Whether `path` demands strict mode (no delegated session keys): the longest matching prefix
/// decides for each spelling of the path, as in [`required_level`], and any strict spelling makes
/// the request strict.
pub(crate) fn strict_required(rules: &[RouteRule], path: &str) -> bool {
    if !rules.iter().any(|rule| rule.strict) {
        return false;
    }
    path_spellings(path)
        .iter()
        .filter_map(|form| longest_match(rules, form))
        .any(|rule| rule.strict)
}

/// Whether presigned URLs are accepted on `path`: the longest matching prefix decides for each
/// spelling of the path, as in [`required_level`], and the strictest spelling wins.
pub(crate) fn presign_policy(rules: &[RouteRule], path: &str) -> PresignPolicy {
    if rules
        .iter()
        .all(|rule| rule.presigned == PresignPolicy::Allow)
    {
        return PresignPolicy::Allow;
    }
    path_spellings(path)
        .iter()
        .filter_map(|form| longest_match(rules, form).map(|rule| rule.presigned))
        .max()
        .unwrap_or(PresignPolicy::Allow)
}

fn longest_match<'a>(rules: &'a [RouteRule], path: &str) -> Option<&'a RouteRule> {
    rules
        .iter()
        .filter(|rule| path.starts_with(rule.path_prefix.as_str()))
        .max_by_key(|rule| rule.path_prefix.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<RouteRule> {
        vec![
            RouteRule {
                path_prefix: "/admin".into(),
                min_level: KeyLevel::Tpm,
                strict: true,
                presigned: PresignPolicy::Deny,
            },
            RouteRule {
                path_prefix: "/admin/public".into(),
                min_level: KeyLevel::Software,
                strict: false,
                presigned: PresignPolicy::Allow,
            },
            RouteRule {
                path_prefix: "/keys/".into(),
                min_level: KeyLevel::HardwareUnattested,
                strict: false,
                presigned: PresignPolicy::GetHeadOnly,
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

    #[test]
    fn presign_policy_follows_the_longest_prefix_on_every_spelling() {
        let rules = rules();
        assert_eq!(presign_policy(&rules, "/admin/x"), PresignPolicy::Deny);
        assert_eq!(
            presign_policy(&rules, "/admin/public/x"),
            PresignPolicy::Allow
        );
        assert_eq!(
            presign_policy(&rules, "/keys/1"),
            PresignPolicy::GetHeadOnly
        );
        assert_eq!(presign_policy(&rules, "/other"), PresignPolicy::Allow);
        for path in ["/%61dmin/x", "//admin/x", "/admin/public/../secret"] {
            assert_eq!(presign_policy(&rules, path), PresignPolicy::Deny, "{path}");
        }
        assert!(PresignPolicy::GetHeadOnly.allows("HEAD"));
        assert!(!PresignPolicy::GetHeadOnly.allows("POST"));
        assert!(!PresignPolicy::Deny.allows("GET"));
    }

    #[test]
    fn strict_follows_the_longest_prefix_on_every_spelling() {
        let rules = rules();
        assert!(strict_required(&rules, "/admin/x"));
        assert!(!strict_required(&rules, "/admin/public/x"));
        assert!(!strict_required(&rules, "/keys/1"));
        assert!(!strict_required(&rules, "/other"));
        for path in ["/%61dmin/x", "//admin/x", "/admin/public/../secret"] {
            assert!(strict_required(&rules, path), "{path}");
        }
    }
}
