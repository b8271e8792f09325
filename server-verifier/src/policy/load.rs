//! Reading policy files and validating them against the schema, with errors that name the file,
//! the line and the reason.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use thiserror::Error;

/// Most policy files read from a directory.
pub(super) const MAX_POLICY_FILES: usize = 1024;
/// Largest policy file read.
pub(super) const MAX_POLICY_FILE_BYTES: u64 = 1024 * 1024;
/// Longest `@id` annotation.
const MAX_ID_LEN: usize = 128;

/// One problem found in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyIssue {
    /// The file's name (as found in the directory).
    pub file: String,
    /// 1-based line, when the problem has a location.
    pub line: Option<usize>,
    /// 1-based column (in characters), when the problem has a location.
    pub column: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "{}:{line}:{column}: {}", self.file, self.reason)
            }
            (Some(line), None) => write!(f, "{}:{line}: {}", self.file, self.reason),
            _ => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// Why policies cannot be loaded or evaluated.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy directory cannot be listed.
    #[error("cannot read policy directory {dir}")]
    ReadDir {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// A policy file cannot be read.
    #[error("cannot read policy file {file}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// A policy file is larger than [`MAX_POLICY_FILE_BYTES`].
    #[error("policy file {0} is larger than {MAX_POLICY_FILE_BYTES} bytes")]
    TooLarge(String),
    /// More than [`MAX_POLICY_FILES`] files.
    #[error("more than {MAX_POLICY_FILES} policy files")]
    TooManyFiles,
    /// The directory holds no `.cedar` file: every covered request would be refused.
    #[error("no .cedar policy files in {0}")]
    NoPolicies(String),
    /// Policies that do not parse or do not validate against the schema.
    #[error("invalid policies:\n{}", list(.0))]
    Invalid(Vec<PolicyIssue>),
    /// The shipped schema does not parse (a build defect).
    #[error("the policy schema is invalid: {0}")]
    Schema(String),
    /// A request could not be expressed against the schema (a defect, or facts out of bounds).
    #[error("cannot build the policy request: {0}")]
    Request(String),
    /// The policy bundle is refused (unsigned, signed with another key, modified, unreadable).
    #[error("the policy bundle is refused")]
    Bundle(#[from] super::bundle::BundleError),
    /// `[policy]` does not say where the policies are.
    #[error("invalid [policy] settings: {0}")]
    Settings(&'static str),
}

fn list(issues: &[PolicyIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The shipped schema, parsed.
pub(super) fn schema() -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(super::SCHEMA)
        .map(|(schema, _warnings)| schema)
        .map_err(|e| PolicyError::Schema(e.to_string()))
}

/// Reads every `*.cedar` file of `dir`, sorted by name.
pub(super) fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, PolicyError> {
    let dir_error = |source| PolicyError::ReadDir {
        dir: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("cedar") {
            continue;
        }
        if files.len() >= MAX_POLICY_FILES {
            return Err(PolicyError::TooManyFiles);
        }
        files.push(path);
    }
    files.sort();
    if files.is_empty() {
        return Err(PolicyError::NoPolicies(dir.display().to_string()));
    }
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let read_error = |source| PolicyError::Read {
                file: path.display().to_string(),
                source,
            };
            let size = std::fs::metadata(&path).map_err(read_error)?.len();
            if size > MAX_POLICY_FILE_BYTES {
                return Err(PolicyError::TooLarge(path.display().to_string()));
            }
            let text = std::fs::read_to_string(&path).map_err(read_error)?;
            Ok((name, text))
        })
        .collect()
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut start = offset;
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// An issue located at the first label of `diagnostic` in `text`.
fn issue(file: &str, text: &str, diagnostic: &dyn Diagnostic, reason: String) -> PolicyIssue {
    let offset = diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let (line, column) = match offset {
        Some(offset) => {
            let (line, column) = line_column(text, offset);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    let reason = match diagnostic.help() {
        Some(help) => format!("{reason} ({help})"),
        None => reason,
    };
    PolicyIssue {
        file: file.to_owned(),
        line,
        column,
        reason,
    }
}

/// Parses each file, gives each policy its id, and validates the whole set.
pub(super) fn compile(
    schema: &Schema,
    sources: &[(String, String)],
) -> Result<(PolicySet, Vec<String>), PolicyError> {
    let mut issues = Vec::new();
    let mut set = PolicySet::new();
    let mut ids = Vec::new();
    // Policy id → index into `sources`, to name the file of a validation error.
    let mut origin: HashMap<String, usize> = HashMap::new();
    for (index, (file, text)) in sources.iter().enumerate() {
        let parsed = match PolicySet::from_str(text) {
            Ok(parsed) => parsed,
            Err(errors) => {
                issues.extend(
                    errors
                        .iter()
                        .map(|error| issue(file, text, error, error.to_string())),
                );
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            issues.push(PolicyIssue {
                file: file.clone(),
                line: None,
                column: None,
                reason: "policy templates are not supported".into(),
            });
            continue;
        }
        // Cedar names a file's policies policy0, policy1, … in source order.
        let mut policies: Vec<_> = parsed.policies().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .strip_prefix("policy")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        });
        for (position, policy) in policies.into_iter().enumerate() {
            let id = match policy.annotation("id") {
                Some(id)
                    if !id.is_empty()
                        && id.len() <= MAX_ID_LEN
                        && !id.chars().any(char::is_control) =>
                {
                    id.to_owned()
                }
                Some(_) => {
                    issues.push(issue(
                        file,
                        text,
                        &NoDiagnostic,
                        format!(
                            "policy {} has an @id that is empty, too long or has control characters",
                            position + 1
                        ),
                    ));
                    continue;
                }
                None => format!("{file}#{}", position + 1),
            };
            if let Some(&first) = origin.get(&id) {
                issues.push(PolicyIssue {
                    file: file.clone(),
                    line: None,
                    column: None,
                    reason: format!(
                        "policy id {id:?} is also used in {}",
                        sources.get(first).map_or("", |(f, _)| f.as_str())
                    ),
                });
                continue;
            }
            if let Err(error) = set.add(policy.new_id(PolicyId::new(&id))) {
                issues.push(PolicyIssue {
                    file: file.clone(),
                    line: None,
                    column: None,
                    reason: error.to_string(),
                });
                continue;
            }
            origin.insert(id.clone(), index);
            ids.push(id);
        }
    }
    if issues.is_empty() {
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        // Cedar reports a context error once per action the policy may apply to; one per place
        // is enough.
        let mut seen = std::collections::HashSet::new();
        for error in result.validation_errors() {
            let id = error.policy_id().to_string();
            let (file, text) = origin
                .get(&id)
                .and_then(|&i| sources.get(i))
                .map_or(("", ""), |(f, t)| (f.as_str(), t.as_str()));
            let found = issue(file, text, error, format!("policy {id}: {error}"));
            if seen.insert((found.file.clone(), found.line, found.column)) {
                issues.push(found);
            }
        }
    }
    if issues.is_empty() {
        Ok((set, ids))
    } else {
        Err(PolicyError::Invalid(issues))
    }
}

/// A diagnostic with no location, for issues this module finds itself.
#[derive(Debug, Error)]
#[error("")]
struct NoDiagnostic;

impl Diagnostic for NoDiagnostic {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_from_one() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 7), (2, 4));
        assert_eq!(line_column(text, 8), (3, 1));
        assert_eq!(line_column(text, 100), (3, 2));
    }
}
