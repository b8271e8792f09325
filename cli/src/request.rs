//! `hwsign request`: a small curl that signs what it sends.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use http::{HeaderValue, Request, header};
use hwsign_client::{AgentClient, BodyDigest, Signer};

use super::http_send::{self, SendBody};
use super::sign::{display_name, parse_absolute_url, parse_headers, parse_method};

#[derive(Debug, Args)]
pub(crate) struct RequestArgs {
    /// Key id (`hk1_…`, see `hwsign keys list`).
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// The API's name, as its verifier expects it.
    #[arg(long)]
    audience: String,
    /// HTTP method [default: GET, or POST with a body].
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    method: Option<String>,
    /// A header to send, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'")]
    headers: Vec<String>,
    /// Send this file as the body (streamed; hashed first, in chunks).
    #[arg(long, value_name = "FILE", conflicts_with = "data")]
    data_file: Option<PathBuf>,
    /// Send this text as the body.
    #[arg(short = 'd', long, value_name = "TEXT")]
    data: Option<String>,
    /// Also sign this header (repeatable); it must be given with -H.
    #[arg(long = "sign-header", value_name = "NAME")]
    sign_headers: Vec<String>,
    /// Trust this CA certificate (PEM) for https://, beside the webpki roots (repeatable).
    #[arg(long, value_name = "FILE")]
    cacert: Vec<PathBuf>,
    /// http:// or https:// URL.
    url: String,
}

pub(crate) async fn run(agent: AgentClient, args: RequestArgs) -> anyhow::Result<ExitCode> {
    let has_body = args.data.is_some() || args.data_file.is_some();
    let method = match &args.method {
        Some(method) => parse_method(method)?,
        None if has_body => http::Method::POST,
        None => http::Method::GET,
    };
    let uri = parse_absolute_url(&args.url)?;
    let headers = parse_headers(&args.headers)?;
    let (body, digest, length): (SendBody, BodyDigest, u64) = match (&args.data, &args.data_file) {
        (Some(text), _) => (
            http_send::bytes_body(text.clone()),
            BodyDigest::of_bytes(text.as_bytes()),
            text.len() as u64,
        ),
        (None, Some(path)) => {
            let (digest, _) = hwsign_client::body_sha256_of_file(path)
                .await
                .with_context(|| format!("hashing {}", path.display()))?;
            let (body, length) = http_send::file_body(path).await?;
            (body, digest, length)
        }
        (None, None) => (http_send::bytes_body(Vec::new()), BodyDigest::empty(), 0),
    };
    let mut request = Request::builder().method(method).uri(uri).body(body)?;
    *request.headers_mut() = headers;
    if has_body || request.method() == http::Method::POST || request.method() == http::Method::PUT {
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    http_send::set_host(&mut request)?;

    let signer = Signer::new(agent, args.key, args.audience).with_signed_headers(args.sign_headers);
    let (mut parts, body) = request.into_parts();
    signer.sign_parts(&mut parts, &digest).await?;
    let tls = crate::https::client_config(&args.cacert)?;
    let response = http_send::send(Request::from_parts(parts, body), &tls).await?;

    println!("{:?} {}", response.version(), response.status());
    for (name, value) in response.headers() {
        println!(
            "{}: {}",
            display_name(name.as_str()),
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    println!();
    println!("{}", String::from_utf8_lossy(response.body()));
    Ok(if response.status().is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::env::DemoEnv;

    fn args(
        env: &DemoEnv,
        audience: &str,
        data: Option<&str>,
        file: Option<PathBuf>,
    ) -> RequestArgs {
        RequestArgs {
            key: env.key.id.clone(),
            audience: audience.to_owned(),
            method: None,
            headers: vec!["Content-Type: application/json".to_owned()],
            data_file: file,
            data: data.map(str::to_owned),
            sign_headers: vec!["content-type".to_owned()],
            cacert: Vec::new(),
            url: env.url("/v1/transfers?currency=EUR"),
        }
    }

    #[tokio::test]
    async fn requests_pass_a_real_verifier() -> anyhow::Result<()> {
        let env = DemoEnv::start("demo-api").await?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("body.json");
        std::fs::write(&file, vec![b'7'; 3 * 1024 * 1024 + 1])?;

        let text = run(
            env.agent.clone(),
            args(&env, "demo-api", Some(r#"{"a":1}"#), None),
        )
        .await?;
        let streamed = run(env.agent.clone(), args(&env, "demo-api", None, Some(file))).await?;
        // Signed for another API: the verifier refuses it (wrong_audience), the command fails.
        let other = run(env.agent.clone(), args(&env, "other-api", Some("{}"), None)).await?;
        env.stop().await?;
        assert_eq!(text, ExitCode::SUCCESS);
        assert_eq!(streamed, ExitCode::SUCCESS);
        assert_eq!(other, ExitCode::FAILURE);
        Ok(())
    }
}
