//! Server-rendered HTML: every value from a store or a request goes through [`esc`]; the page
//! frame carries no inline script or style (the CSP forbids both).

use std::fmt::Write as _;

use crate::admin_api::Role;

/// Escapes text for an HTML element or a quoted attribute.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A Unix time as `YYYY-MM-DDTHH:MM:SSZ` (or `—`).
pub(crate) fn time(unix: Option<i64>) -> String {
    unix.map_or_else(
        || "—".to_owned(),
        |unix| hwsign_proto::SigningTime::from_unix(unix).to_rfc3339(),
    )
}

/// Who is signed in, for the page frame.
pub(crate) struct Viewer<'a> {
    pub(crate) user_name: &'a str,
    pub(crate) role: Role,
    pub(crate) csrf: &'a str,
}

const NAV: [(&str, &str); 5] = [
    ("devices", "Devices"),
    ("sessions", "Sessions"),
    ("users", "Users & groups"),
    ("audit", "Audit"),
    ("rules", "Rules & policies"),
];

/// A whole page: head (stylesheet and script from `/console/static/`), navigation when signed
/// in, and `body`.
pub(crate) fn page(title: &str, current: &str, viewer: Option<&Viewer<'_>>, body: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width, initial-scale=1\">\
<title>{} · hwsign console</title>\
<link rel=stylesheet href=\"/console/static/console.css\">\
<script src=\"/console/static/console.js\" defer></script></head><body>\
<header><span class=brand>hwsign console</span>",
        esc(title)
    );
    if let Some(viewer) = viewer {
        out.push_str("<nav>");
        for (path, label) in NAV {
            let class = if path == current {
                " class=current"
            } else {
                ""
            };
            let _ = write!(out, "<a href=\"/console/{path}\"{class}>{label}</a>");
        }
        let _ = write!(
            out,
            "</nav><span class=who>{} <span class=\"role role-{}\">{}</span></span>\
<form method=post action=\"/console/logout\" class=inline>{}<button id=sign-out>Sign out</button></form>",
            esc(viewer.user_name),
            viewer.role.as_str(),
            viewer.role.as_str(),
            csrf_field(viewer.csrf)
        );
    }
    let _ = write!(
        out,
        "</header><main><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    out
}

/// The hidden CSRF field of a form.
pub(crate) fn csrf_field(csrf: &str) -> String {
    format!("<input type=hidden name=csrf value=\"{}\">", esc(csrf))
}

/// A one-button POST form for an action that needs `needed`: rendered disabled (and without a
/// form) for a viewer below it.
pub(crate) fn action_button(
    viewer: &Viewer<'_>,
    needed: Role,
    action: &str,
    fields: &[(&str, &str)],
    label: &str,
    test_id: &str,
) -> String {
    if viewer.role < needed {
        return format!(
            "<button disabled title=\"needs the {} role\" data-testid=\"{}\">{}</button>",
            needed.as_str(),
            esc(test_id),
            esc(label)
        );
    }
    let mut out = format!(
        "<form method=post action=\"{}\" class=inline>{}",
        esc(action),
        csrf_field(viewer.csrf)
    );
    for (name, value) in fields {
        let _ = write!(
            out,
            "<input type=hidden name=\"{}\" value=\"{}\">",
            esc(name),
            esc(value)
        );
    }
    let _ = write!(
        out,
        "<button class=danger data-testid=\"{}\">{}</button></form>",
        esc(test_id),
        esc(label)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn formats_unix_times() {
        assert_eq!(time(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(time(Some(1_798_761_600)), "2027-01-01T00:00:00Z");
        assert_eq!(time(None), "—");
    }
}
