//! The one loader of conformance vector folders (`vectors/` at the repository root, plus
//! `$HWSIGN_VECTORS` when set, which adds cases and never replaces them). It reads every request
//! file the AWS suite can contain — origin-form and absolute-form targets, paths with spaces,
//! header values continued on following lines (obsolete line folding, kept in the value as
//! `\n` + the continuation line so the profile decides) — and fails, never skips, on anything it
//! cannot read: a folder without its files, a file it does not know, a line it cannot parse.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

/// The in-repo vectors folder.
pub(crate) fn repo_vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vectors")
}

/// Every case folder of `suite` (`aws-sigv4a`, `hws1`): the in-repo ones, then those under
/// `$HWSIGN_VECTORS/<suite>` when the variable is set. Every entry of a suite folder must be a
/// case folder holding `request.txt`, except the `LICENSE`, `NOTICE` and `README.md` files.
pub(crate) fn case_dirs(suite: &str) -> Result<Vec<PathBuf>> {
    let mut roots = vec![repo_vectors().join(suite)];
    if let Some(extra) = std::env::var_os("HWSIGN_VECTORS") {
        let extra = PathBuf::from(extra).join(suite);
        if extra.exists() || suite != "hws1" {
            roots.push(extra);
        }
    }
    let mut all = Vec::new();
    for root in roots {
        let mut cases = Vec::new();
        for entry in fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
            let path = entry
                .with_context(|| format!("listing {}", root.display()))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_file() && matches!(name, "LICENSE" | "NOTICE" | "README.md") {
                continue;
            }
            ensure!(
                path.is_dir() && path.join("request.txt").is_file(),
                "{} is not a case folder with a request.txt",
                path.display()
            );
            cases.push(path);
        }
        ensure!(
            !cases.is_empty(),
            "no case folders under {}",
            root.display()
        );
        cases.sort();
        all.extend(cases);
    }
    Ok(all)
}

/// Fails when `dir` holds a file not in `known`: a vector the loader would silently not check.
pub(crate) fn check_known_files(dir: &Path, known: &[&str]) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("file name is not UTF-8")?;
        ensure!(
            path.is_file() && known.contains(&name),
            "{}: unknown file; the loader would not check it",
            path.display()
        );
    }
    Ok(())
}

/// The content of `dir/name`, or `None` when absent; an unreadable file is an error.
pub(crate) fn read_optional(dir: &Path, name: &str) -> Result<Option<String>> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

/// The content of `dir/name`, which must exist.
pub(crate) fn read(dir: &Path, name: &str) -> Result<String> {
    read_optional(dir, name)?.with_context(|| format!("{}: missing", dir.join(name).display()))
}

/// A parsed `request.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedRequest {
    /// Method.
    pub method: String,
    /// `scheme` and `authority` of an absolute-form target (`GET https://h:443/p HTTP/1.1`).
    pub absolute: Option<(String, String)>,
    /// Path as written.
    pub path: String,
    /// Raw query without `?`.
    pub query: String,
    /// Header fields in order; a folded value keeps its continuation lines after `\n`.
    pub headers: Vec<(String, String)>,
    /// Body bytes (after the first blank line).
    pub body: Vec<u8>,
}

impl ParsedRequest {
    /// Headers as borrowed pairs, for `RequestParts`.
    pub(crate) fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

/// Parses a request file: request line, `Name:value` lines (continuation lines start with a space
/// or tab), a blank line, the body. Lines end in `\n`; a `\r` anywhere in the head is refused.
pub(crate) fn parse_request(text: &str) -> Result<ParsedRequest> {
    let (head, body) = match text.split_once("\n\n") {
        Some((head, body)) => (head, body.as_bytes().to_vec()),
        None => (text.strip_suffix('\n').unwrap_or(text), Vec::new()),
    };
    ensure!(!head.contains('\r'), "CR in the request head");
    let mut lines = head.split('\n');
    let request_line = lines.next().context("empty request file")?;
    let (method, rest) = request_line
        .split_once(' ')
        .context("request line without method")?;
    ensure!(!method.is_empty(), "empty method");
    let target = rest
        .strip_suffix(" HTTP/1.1")
        .context("request line does not end in HTTP/1.1")?;
    let (absolute, origin) = match target.split_once("://") {
        Some((scheme, rest)) if !scheme.contains('/') => {
            let cut = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, origin) = rest.split_at(cut);
            let origin = if origin.is_empty() { "/" } else { origin };
            (Some((scheme.to_owned(), authority.to_owned())), origin)
        }
        _ => (None, target),
    };
    ensure!(
        origin.starts_with('/'),
        "target {target:?} is not origin or absolute form"
    );
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = headers.last_mut() else {
                bail!("continuation line before any header: {line:?}");
            };
            value.push('\n');
            value.push_str(line);
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("header line without colon: {line:?}"))?;
        ensure!(!name.is_empty(), "header line without name: {line:?}");
        headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(ParsedRequest {
        method: method.to_owned(),
        absolute,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    })
}
