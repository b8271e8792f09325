//! `hwsign sign`: print the headers that sign a described request.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use hwsign_client::{AgentClient, BodyDigest, Signer};

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// Key id (`hk1_…`, see `hwsign keys list`).
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// The API's name, as its verifier expects it.
    #[arg(long)]
    audience: String,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Absolute URL of the request, e.g. https://api.example.com/v1/items?x=1.
    #[arg(long)]
    url: String,
    /// File whose content is the request body (hashed in chunks, never loaded whole).
    #[arg(long, value_name = "FILE")]
    data_file: Option<PathBuf>,
    /// A header the request will carry, `Name: value` (repeatable). Content-Type is signed when
    /// present; name others with --sign-header.
    #[arg(long = "header", short = 'H', value_name = "'NAME: VALUE'")]
    headers: Vec<String>,
    /// Also sign this header (repeatable); it must be given with --header.
    #[arg(long = "sign-header", value_name = "NAME")]
    sign_headers: Vec<String>,
}

pub(crate) async fn run(
    agent: AgentClient,
    args: SignArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let method = parse_method(&args.method)?;
    let uri = parse_absolute_url(&args.url)?;
    let mut headers = parse_headers(&args.headers)?;
    let digest = match &args.data_file {
        Some(path) => {
            hwsign_client::body_sha256_of_file(path)
                .await
                .with_context(|| format!("hashing {}", path.display()))?
                .0
        }
        None => BodyDigest::empty(),
    };
    let signer = Signer::new(agent, args.key, args.audience).with_signed_headers(args.sign_headers);
    let answer = signer
        .sign_headers(&method, &uri, &mut headers, &digest)
        .await?;
    if json {
        // {"key_id": ..., "date": ..., "headers": {"Authorization": ..., ...}}
        let headers: serde_json::Map<String, serde_json::Value> = answer
            .headers
            .iter()
            .map(|f| (display_name(&f.name), f.value.clone().into()))
            .collect();
        let output = serde_json::json!({
            "key_id": answer.key_id,
            "date": answer.date,
            "headers": headers,
        });
        println!("{}", serde_json::to_string_pretty(&output)?);
        return Ok(ExitCode::SUCCESS);
    }
    for field in answer.headers {
        println!("{}: {}", display_name(&field.name), field.value);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn parse_method(text: &str) -> anyhow::Result<Method> {
    Method::from_bytes(text.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("invalid HTTP method {text:?}"))
}

pub(crate) fn parse_absolute_url(text: &str) -> anyhow::Result<Uri> {
    let uri: Uri = text
        .parse()
        .with_context(|| format!("invalid URL {text:?}"))?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        bail!("the URL must be absolute, like https://host/path: {text:?}");
    }
    Ok(uri)
}

/// Parses `Name: value` arguments, curl style.
pub(crate) fn parse_headers(raw: &[String]) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for entry in raw {
        let Some((name, value)) = entry.split_once(':') else {
            bail!("a header must look like 'Name: value', got {entry:?}");
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("invalid header name in {entry:?}"))?;
        let value = HeaderValue::from_str(value.trim())
            .with_context(|| format!("invalid header value in {entry:?}"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// `x-hws-date` → `X-Hws-Date`, as people write header names.
pub(crate) fn display_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_like_curl_and_names_display_capitalized() -> anyhow::Result<()> {
        let parsed =
            parse_headers(&["Content-Type: application/json".into(), "X-A:  b c ".into()])?;
        assert_eq!(parsed["content-type"], "application/json");
        assert_eq!(parsed["x-a"], "b c");
        assert!(parse_headers(&["no colon".into()]).is_err());
        assert!(parse_headers(&["bad name: v".into()]).is_err());
        assert_eq!(display_name("x-hws-content-sha256"), "X-Hws-Content-Sha256");
        assert_eq!(display_name("authorization"), "Authorization");
        assert!(parse_absolute_url("/relative").is_err());
        assert_eq!(parse_method("post")?, Method::POST);
        Ok(())
    }
}
