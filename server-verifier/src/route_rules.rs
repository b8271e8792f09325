//! Route rules: the minimum key level a path demands, and whether it demands strict mode.

use hwsign_proto::api::KeyLevel;

use crate::config::{PresignPolicy, RouteRule};
use crate::path_spellings::path_spellings;
use crate::webauthn::StepUp;

/// What the route rules say about one request path. Each field is decided over every spelling
/// of the path (as sent, percent-decoded, dot segments resolved and slashes collapsed): for each
/// spelling the longest matching prefix decides, and the strictest spelling wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteOutcome {
    /// The lowest key level allowed; `None` when no rule matches any spelling.
    pub(crate) min_level: Option<KeyLevel>,
    /// Strict mode (no delegated session keys) if any spelling's rule demands it.
    pub(crate) strict: bool,
    /// Whether presigned URLs are accepted.
    pub(crate) presigned: PresignPolicy,
    /// Step-up, if any spelling's rule demands it: the shortest age and UV if any asks.
    pub(crate) step_up: Option<StepUp>,
}

/// The rules' outcome for `path`, from one pass over its spellings (none when no rule exists).
pub(crate) fn route_outcome(rules: &[RouteRule], path: &str) -> RouteOutcome {
    let mut outcome = RouteOutcome {
        min_level: None,
        strict: false,
        presigned: PresignPolicy::Allow,
        step_up: None,
    };
    if rules.is_empty() {
        return outcome;
    }
    for form in path_spellings(path) {
        if let Some(rule) = longest_match(rules, &form) {
            outcome.min_level = outcome.min_level.max(Some(rule.min_level));
            outcome.strict |= rule.strict;
            outcome.presigned = outcome.presigned.max(rule.presigned);
            outcome.step_up = strictest_step_up(outcome.step_up, rule.step_up);
        }
    }
    outcome
}

/// Who a route admits, from the route rules naming users or groups: every spelling's longest
/// matching rule that names any (all of them must admit the device's user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeopleRule {
    /// The rule's prefix (named in the refusal).
    pub(crate) path_prefix: String,
    /// Admitted users (userName or id).
    pub(crate) users: Vec<String>,
    /// Admitted groups (displayName).
    pub(crate) groups: Vec<String>,
}

impl PeopleRule {
    /// Whether the active user `user` with `groups` is admitted.
    pub(crate) fn admits(&self, user: &crate::directory::User, groups: &[String]) -> bool {
        self.users
            .iter()
            .any(|u| u == &user.id || u.eq_ignore_ascii_case(&user.user_name))
            || self.groups.iter().any(|g| groups.contains(g))
    }
}

/// The people conditions of the rules that decide `path` (none when no rule names people).
pub(crate) fn people_rules(rules: &[RouteRule], path: &str) -> Vec<PeopleRule> {
    if !rules
        .iter()
        .any(|rule| !rule.users.is_empty() || !rule.groups.is_empty())
    {
        return Vec::new();
    }
    let mut out: Vec<PeopleRule> = Vec::new();
    for form in path_spellings(path) {
        if let Some(rule) = longest_match(rules, &form)
            && (!rule.users.is_empty() || !rule.groups.is_empty())
            && !out.iter().any(|seen| seen.path_prefix == rule.path_prefix)
        {
            out.push(PeopleRule {
                path_prefix: rule.path_prefix.clone(),
                users: rule.users.clone(),
                groups: rule.groups.clone(),
            });
        }
    }
    out
}

fn strictest_step_up(a: Option<StepUp>, b: Option<StepUp>) -> Option<StepUp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(StepUp {
            max_age_secs: a.max_age_secs.min(b.max_age_secs),
            user_verification: a.user_verification || b.user_verification,
        }),
        (one, None) | (None, one) => one,
    }
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

    fn required_level(rules: &[RouteRule], path: &str) -> Option<KeyLevel> {
        route_outcome(rules, path).min_level
    }

    fn strict_required(rules: &[RouteRule], path: &str) -> bool {
        route_outcome(rules, path).strict
    }

    fn presign_policy(rules: &[RouteRule], path: &str) -> PresignPolicy {
        route_outcome(rules, path).presigned
    }

    fn rules() -> Vec<RouteRule> {
        vec![
            RouteRule {
                path_prefix: "/admin".into(),
                min_level: KeyLevel::Tpm,
                strict: true,
                presigned: PresignPolicy::Deny,
                step_up: None,
                users: Vec::new(),
                groups: Vec::new(),
            },
            RouteRule {
                path_prefix: "/admin/public".into(),
                min_level: KeyLevel::Software,
                strict: false,
                presigned: PresignPolicy::Allow,
                step_up: None,
                users: Vec::new(),
                groups: Vec::new(),
            },
            RouteRule {
                path_prefix: "/keys/".into(),
                min_level: KeyLevel::HardwareUnattested,
                strict: false,
                presigned: PresignPolicy::GetHeadOnly,
                step_up: None,
                users: Vec::new(),
                groups: Vec::new(),
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
