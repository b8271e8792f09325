//! The audit log through the admin API (docs/ADMIN.md "Audit", docs/AUDIT.md "Export"): search
//! by filter (viewer), a streamed export (admin only) that an auditor verifies offline with
//! `hwsign-verifier audit verify --export`, a byte changed in it named by its seq, and the same
//! through `hwsign-verifier admin audit`.

use crate::admin_support::{ADMIN_HOST, AdminFleet, expect_admin_refusal, expect_ok};

use std::path::Path;
use std::process::Output;

use anyhow::{Context as _, Result, ensure};
use hwsign_e2e::fleet::http_get;
use hwsign_test_support::binaries::bin_path;
use serde_json::{Value, json};

/// `hwsign-verifier audit verify --export --key PUB FILE`.
fn verify_export(f: &AdminFleet, file: &Path) -> Result<Output> {
    let audit = f.audit.as_ref().context("an audited fleet")?;
    Ok(std::process::Command::new(bin_path("hwsign-verifier")?)
        .args(["audit", "verify", "--export", "--key"])
        .arg(&audit.public_key)
        .arg(file)
        .output()?)
}

/// `hwsign-verifier admin …` as the admin key.
fn admin_cli(f: &AdminFleet, args: &[&str]) -> Result<Output> {
    Ok(std::process::Command::new(bin_path("hwsign-verifier")?)
        .arg("admin")
        .arg("--url")
        .arg(format!("http://{}", f.admin_addr(0)))
        .arg("--host")
        .arg(ADMIN_HOST)
        .arg("--key")
        .arg(&f.admin)
        .arg("--agent-socket")
        .arg(f.agent.socket())
        .args(args)
        .output()?)
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_audit_search_export_verify_and_tamper() -> Result<()> {
    let f = AdminFleet::start_audited(1).await?;
    let laptop = f.devices[0].clone();
    // The laptop belongs to alice: its decisions name her.
    let alice = f.user_with_devices("alice@example.com", &[&laptop]).await?;
    // Decisions: three accepted requests of the laptop, one unsigned request refused.
    for _ in 0..3 {
        expect_ok(&f.api_get(0, &laptop).await?)?;
    }
    let refused = http_get(f.fleet.replicas[0].addr, "/v1/items").await?;
    ensure!(refused.status == 401, "{}", refused.status);
    // Admin actions: an enrollment token issued by the operator.
    let issued = f
        .admin_call(
            0,
            &f.operator,
            "POST",
            "/admin/v1/enrollment-tokens",
            Some(json!({"label": "new laptop"})),
        )
        .await?;
    ensure!(
        issued.status == 200,
        "{}",
        String::from_utf8_lossy(&issued.body)
    );
    let token_id = issued.json()?["id"]
        .as_str()
        .context("token id")?
        .to_owned();

    // Search (viewer): the laptop's accepted decisions, paged two at a time.
    let path = format!("/admin/v1/audit?kind=decision&outcome=accepted&key={laptop}&limit=2");
    let page = f.admin_call(0, &f.viewer, "GET", &path, None).await?;
    ensure!(
        page.status == 200,
        "{}",
        String::from_utf8_lossy(&page.body)
    );
    let page = page.json()?;
    let records = page["records"].as_array().context("records")?;
    ensure!(records.len() == 2, "{page}");
    ensure!(records.iter().all(|r| r["key"] == laptop.as_str()
        && r["route"] == "/v1/items"
        && r["user_agent"] == "admin-e2e/1"
        && r["user"] == alice.as_str()));
    let next = page["next_after_seq"].as_u64().context("a next page")?;
    // By user: the same three decisions.
    let by_user = f
        .admin_call(
            0,
            &f.viewer,
            "GET",
            &format!("/admin/v1/audit?kind=decision&user={alice}"),
            None,
        )
        .await?
        .json()?;
    ensure!(
        by_user["records"].as_array().map(Vec::len) == Some(3),
        "{by_user}"
    );
    let rest = f
        .admin_call(
            0,
            &f.viewer,
            "GET",
            &format!("{path}&after_seq={next}"),
            None,
        )
        .await?
        .json()?;
    ensure!(
        rest["records"].as_array().map(Vec::len) == Some(1),
        "{rest}"
    );
    ensure!(rest["next_after_seq"].is_null(), "{rest}");
    // The refusal, by its code; the token, by its step and actor.
    let refusals = f
        .admin_call(
            0,
            &f.viewer,
            "GET",
            "/admin/v1/audit?code=missing_authorization",
            None,
        )
        .await?
        .json()?;
    ensure!(
        refusals["records"].as_array().map(Vec::len) == Some(1),
        "{refusals}"
    );
    let tokens = f
        .admin_call(
            0,
            &f.viewer,
            "GET",
            &format!("/admin/v1/audit?step=token_issued&actor={}", f.operator),
            None,
        )
        .await?
        .json()?;
    ensure!(
        tokens["records"][0]["token"] == token_id.as_str(),
        "{tokens}"
    );
    // Bounds and unknown parameters are refused.
    let refused = f
        .admin_call(0, &f.viewer, "GET", "/admin/v1/audit?limit=5000", None)
        .await?;
    expect_admin_refusal(&refused, 400, "invalid_request")?;

    // Export: not for a viewer or an operator.
    for key in [&f.viewer, &f.operator] {
        let refused = f
            .admin_call(0, key, "GET", "/admin/v1/audit/export", None)
            .await?;
        expect_admin_refusal(&refused, 403, "forbidden_role")?;
    }
    // The admin's filtered JSONL export verifies offline.
    let export = f
        .admin_call(
            0,
            &f.admin,
            "GET",
            "/admin/v1/audit/export?kind=decision&format=jsonl",
            None,
        )
        .await?;
    ensure!(
        export.status == 200,
        "{}",
        String::from_utf8_lossy(&export.body)
    );
    let body = String::from_utf8(export.body.clone())?;
    let lines: Vec<Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        lines.iter().filter(|r| r["kind"] == "decision").count() == 4,
        "{body}"
    );
    ensure!(
        lines.iter().any(|r| r["omitted"] == true),
        "stand-ins: {body}"
    );
    ensure!(lines.iter().any(|r| r["kind"] == "checkpoint"), "{body}");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &export.body)?;
    let verified = verify_export(&f, &file)?;
    ensure!(verified.status.success(), "{}", text(&verified));

    // One byte changed in one record: verify names that record's seq.
    let (index, victim) = lines
        .iter()
        .enumerate()
        .find(|(_, r)| r["kind"] == "decision" && r["outcome"] == "accepted")
        .context("an accepted decision")?;
    let seq = victim["seq"].as_u64().context("seq")?;
    let mut tampered: Vec<String> = body.lines().map(str::to_owned).collect();
    tampered[index] = tampered[index].replacen("admin-e2e/1", "admin-e2e/2", 1);
    ensure!(tampered[index] != body.lines().nth(index).unwrap_or_default());
    std::fs::write(&file, tampered.join("\n") + "\n")?;
    let broken = verify_export(&f, &file)?;
    ensure!(!broken.status.success(), "{}", text(&broken));
    ensure!(
        text(&broken).contains(&format!("seq {seq}")) && text(&broken).contains("edited"),
        "{}",
        text(&broken)
    );

    // CSV: a header and one row per matching record.
    let csv = f
        .admin_call(
            0,
            &f.admin,
            "GET",
            "/admin/v1/audit/export?kind=decision&outcome=refused&format=csv",
            None,
        )
        .await?;
    ensure!(csv.status == 200);
    let csv = String::from_utf8(csv.body)?;
    let rows: Vec<&str> = csv.lines().collect();
    ensure!(
        rows.len() == 2 && rows[0].starts_with("seq,ts,kind"),
        "{csv}"
    );
    ensure!(rows[1].contains("missing_authorization"), "{csv}");

    // The CLI: search, and an export to a file that verifies.
    let searched = admin_cli(
        &f,
        &[
            "audit",
            "search",
            "--filter",
            "kind=decision,outcome=refused",
        ],
    )?;
    ensure!(searched.status.success(), "{}", text(&searched));
    let searched: Value = serde_json::from_slice(&searched.stdout)?;
    ensure!(
        searched["records"].as_array().map(Vec::len) == Some(1),
        "{searched}"
    );
    let out = dir.path().join("cli-export.jsonl");
    let exported = admin_cli(
        &f,
        &[
            "audit",
            "export",
            "--filter",
            &format!("key={laptop}"),
            "--out",
            out.to_str().context("path")?,
        ],
    )?;
    ensure!(exported.status.success(), "{}", text(&exported));
    let verified = verify_export(&f, &out)?;
    ensure!(verified.status.success(), "{}", text(&verified));
    ensure!(std::fs::read_to_string(&out)?.contains(&laptop));
    // The exports themselves are on record.
    let exports = f
        .admin_call(
            0,
            &f.viewer,
            "GET",
            "/admin/v1/audit?action=audit_export",
            None,
        )
        .await?
        .json()?;
    ensure!(
        exports["records"].as_array().map(Vec::len) == Some(3),
        "{exports}"
    );
    Ok(())
}
