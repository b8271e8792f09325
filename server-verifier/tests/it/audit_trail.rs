//! The decision log: records from the verify path, the chain check finding each kind of edit,
//! crash recovery, rotation, and streaming, verifiable exports.

use std::cell::Cell;
use std::fs;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use hwsign_audit_chain::{Sealer, record_hash};
use hwsign_verifier::audit::{
    AuditEvent, AuditLog, AuditSettings, BreakKind, CHECKPOINTS_FILE, CheckOptions, CheckReport,
    CheckpointKey, CheckpointSigner, ExportFormat, ExportQuery, WhenFull, chain_files,
};
use hwsign_verifier::{
    DeviceClock, DeviceRecord, KeyLevel, KeyRegistry as _, MemoryRegistry, MemoryReplayCache,
    RejectCode, Verifier, VerifierConfig,
};
use serde_json::{Map, Value};

use crate::verify_support::{self, SignOptions, TestKey, TestRequest, at, sign};

/// A log directory with its checkpoint key.
struct LogDir {
    _temp: tempfile::TempDir,
    dir: PathBuf,
    settings: AuditSettings,
    public: CheckpointKey,
}

fn log_dir(configure: impl FnOnce(&mut AuditSettings)) -> Result<LogDir> {
    let temp = tempfile::tempdir()?;
    let (private, public) = CheckpointSigner::generate_pem()?;
    let key_path = temp.path().join("checkpoint.pem");
    fs::write(&key_path, private.as_bytes())?;
    let dir = temp.path().join("audit");
    let mut settings = AuditSettings::new(&dir, &key_path);
    configure(&mut settings);
    Ok(LogDir {
        _temp: temp,
        dir,
        settings,
        public: CheckpointKey::from_public_key_pem(&public)?,
    })
}

fn check(log: &LogDir, with_checkpoints: bool) -> Result<CheckReport> {
    let files = chain_files(&log.dir)?;
    let inputs = files
        .iter()
        .map(|path| {
            Ok((
                path.display().to_string(),
                BufReader::new(fs::File::open(path)?),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let kept = if with_checkpoints {
        Some(BufReader::new(fs::File::open(
            log.dir.join(CHECKPOINTS_FILE),
        )?))
    } else {
        None
    };
    let options = CheckOptions {
        key: Some(log.public.clone()),
        ..CheckOptions::default()
    };
    Ok(hwsign_verifier::audit::verify(inputs, kept, options)?)
}

fn records(log: &LogDir) -> Result<Vec<Map<String, Value>>> {
    let mut out = Vec::new();
    for path in chain_files(&log.dir)? {
        for line in fs::read_to_string(path)?.lines() {
            match serde_json::from_str(line)? {
                Value::Object(record) => out.push(record),
                _ => anyhow::bail!("not an object"),
            }
        }
    }
    Ok(out)
}

/// A closed log of `count` admin records, a checkpoint every 5 records.
fn admin_log(count: usize) -> Result<LogDir> {
    let log = log_dir(|settings| settings.checkpoint_every_records = 5)?;
    let audit = AuditLog::open(&log.settings)?;
    for i in 0..count {
        let target = format!("dev-{i}");
        let action = if i % 3 == 0 {
            "revoke_device"
        } else {
            "list_sessions"
        };
        audit
            .record(AuditEvent::admin("alice", action, Some(&target), "ok"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    audit.close();
    Ok(log)
}

fn the_file(log: &LogDir) -> Result<PathBuf> {
    let files = chain_files(&log.dir)?;
    ensure!(files.len() == 1, "one chain file expected, got {files:?}");
    Ok(files[0].clone())
}

fn edit_lines(path: &Path, edit: impl FnOnce(&mut Vec<String>) -> Result<()>) -> Result<()> {
    let mut lines: Vec<String> = fs::read_to_string(path)?
        .lines()
        .map(str::to_owned)
        .collect();
    edit(&mut lines)?;
    fs::write(path, lines.join("\n") + "\n")?;
    Ok(())
}

fn line_index(lines: &[String], seq: u64) -> Result<usize> {
    lines
        .iter()
        .position(|line| line.contains(&format!("\"seq\":{seq},")))
        .with_context(|| format!("no record {seq}"))
}

fn set_field(line: &str, field: &str, value: Value, rehash: bool) -> Result<String> {
    let Value::Object(mut record) = serde_json::from_str(line)? else {
        anyhow::bail!("not an object");
    };
    record.insert(field.to_owned(), value);
    if rehash {
        let hash = record_hash(&record)?;
        record.insert("hash".to_owned(), Value::from(hex::encode(hash)));
    }
    Ok(serde_json::to_string(&record)?)
}

/// The check of a 20-record log after `edit` of its lines.
fn tampered(edit: impl FnOnce(&mut Vec<String>) -> Result<()>) -> Result<CheckReport> {
    let log = admin_log(20)?;
    edit_lines(&the_file(&log)?, edit)?;
    check(&log, true)
}

fn expect_break(report: &CheckReport, seq: u64, kind: BreakKind) -> Result<()> {
    let found = report.first_break.as_ref().context("no break found")?;
    ensure!(
        found.seq == seq && found.kind == kind,
        "expected {kind:?} at seq {seq}, got {found}"
    );
    Ok(())
}

#[test]
fn audit_an_untouched_log_verifies_with_its_checkpoints() -> Result<()> {
    let log = admin_log(20)?;
    let report = check(&log, true)?;
    ensure!(report.first_break.is_none(), "{report:?}");
    // log_opened + 20 records + 4 checkpoints after each 5 records (+1 closing after log_opened's run).
    ensure!(report.checkpoints >= 4, "{report:?}");
    ensure!(report.first_seq == Some(0));
    let all = records(&log)?;
    ensure!(all[0]["kind"] == "log_opened");
    ensure!(all.last().map(|r| r["kind"].clone()) == Some(Value::from("checkpoint")));
    Ok(())
}

#[test]
fn audit_an_edited_record_is_found_at_its_seq() -> Result<()> {
    let report = tampered(|lines| {
        let i = line_index(lines, 7)?;
        lines[i] = set_field(&lines[i], "actor", Value::from("mallory"), false)?;
        Ok(())
    })?;
    expect_break(&report, 7, BreakKind::Edited)
}

#[test]
fn audit_an_edited_record_with_its_hash_recomputed_is_found_at_its_seq() -> Result<()> {
    let report = tampered(|lines| {
        let i = line_index(lines, 7)?;
        lines[i] = set_field(&lines[i], "actor", Value::from("mallory"), true)?;
        Ok(())
    })?;
    expect_break(&report, 7, BreakKind::Edited)
}

#[test]
fn audit_a_removed_record_is_found_at_its_seq() -> Result<()> {
    let report = tampered(|lines| {
        let i = line_index(lines, 7)?;
        lines.remove(i);
        Ok(())
    })?;
    expect_break(&report, 7, BreakKind::Removed)
}

#[test]
fn audit_reordered_records_are_found_at_the_first_out_of_place() -> Result<()> {
    let report = tampered(|lines| {
        let i = line_index(lines, 7)?;
        lines.swap(i, i + 1);
        Ok(())
    })?;
    expect_break(&report, 7, BreakKind::Reordered)
}

#[test]
fn audit_an_inserted_record_is_found_at_its_seq() -> Result<()> {
    let report = tampered(|lines| {
        // A well-formed forgery: seq 8, linked to record 7, its own hash right.
        let i = line_index(lines, 8)?;
        let forged = set_field(&lines[i], "actor", Value::from("mallory"), true)?;
        lines.insert(i, forged);
        Ok(())
    })?;
    expect_break(&report, 8, BreakKind::Inserted)
}

#[test]
fn audit_a_tail_truncated_past_a_checkpoint_is_found_by_the_checkpoints_kept_apart() -> Result<()> {
    let log = admin_log(20)?;
    edit_lines(&the_file(&log)?, |lines| {
        let i = line_index(lines, 13)?;
        lines.truncate(i);
        Ok(())
    })?;
    expect_break(&check(&log, true)?, 13, BreakKind::Truncated)?;
    // Without the copy kept apart, a clean cut at a record boundary is not visible.
    ensure!(check(&log, false)?.first_break.is_none());
    Ok(())
}

#[test]
fn audit_a_rewritten_chain_is_found_at_its_forged_checkpoint() -> Result<()> {
    let log = admin_log(20)?;
    // The attacker edits record 2 and re-seals everything after it, signing checkpoints with a
    // key of their own; the copy of the checkpoints kept apart is rewritten the same way.
    let (other, _) = CheckpointSigner::generate_pem()?;
    let other = CheckpointSigner::from_pkcs8_pem(&other)?;
    let path = the_file(&log)?;
    let original = records(&log)?;
    let mut sealer = Sealer::genesis();
    let mut chain = Vec::new();
    let mut kept = Vec::new();
    let mut first_checkpoint_after = None;
    for mut record in original {
        let seq = record["seq"].as_u64().context("seq")?;
        if seq == 2 {
            record.insert("actor".into(), Value::from("mallory"));
        }
        let line = if record["kind"] == "checkpoint" {
            if seq > 2 && first_checkpoint_after.is_none() {
                first_checkpoint_after = Some(seq);
            }
            record.remove("sig");
            record.remove("key");
            let line = sealer.seal_checkpoint(record, &other)?;
            kept.extend_from_slice(&line);
            line
        } else {
            sealer.seal(record)?
        };
        chain.extend_from_slice(&line);
    }
    fs::write(&path, chain)?;
    let seq = first_checkpoint_after.context("a checkpoint after seq 2")?;
    expect_break(&check(&log, false)?, seq, BreakKind::ForgedCheckpoint)?;
    fs::write(log.dir.join(CHECKPOINTS_FILE), kept)?;
    let report = check(&log, true)?;
    let found = report.first_break.context("no break")?;
    ensure!(found.kind == BreakKind::ForgedCheckpoint, "{found}");
    Ok(())
}

#[test]
fn audit_a_torn_last_line_is_cut_and_the_chain_goes_on() -> Result<()> {
    let log = admin_log(3)?;
    let path = the_file(&log)?;
    fs::OpenOptions::new()
        .append(true)
        .open(&path)?
        .write_all(b"{\"kind\":\"admin\",\"seq\":")?;
    let audit = AuditLog::open(&log.settings)?;
    audit
        .record(AuditEvent::enrollment(Some("dev-9"), Some("hk1_x"), "ok"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    audit.close();
    let report = check(&log, true)?;
    ensure!(report.first_break.is_none(), "{report:?}");
    let opened: Vec<_> = records(&log)?
        .into_iter()
        .filter(|r| r["kind"] == "log_opened")
        .collect();
    ensure!(opened.len() == 2);
    ensure!(opened[1]["torn_bytes"] == 22, "{:?}", opened[1]);
    Ok(())
}

#[test]
fn audit_rotated_files_verify_as_one_chain() -> Result<()> {
    let log = log_dir(|settings| {
        settings.rotate_bytes = 2_000;
        settings.checkpoint_every_records = 7;
    })?;
    let audit = AuditLog::open(&log.settings)?;
    for i in 0..60 {
        audit
            .record(AuditEvent::recovery(
                &format!("user-{i}"),
                "token_issued",
                Some("alice"),
                "ok",
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    audit.close();
    let files = chain_files(&log.dir)?;
    ensure!(files.len() > 3, "{files:?}");
    let report = check(&log, true)?;
    ensure!(report.first_break.is_none(), "{report:?}");
    ensure!(report.records > 60);
    // A file dropped from the middle is a gap.
    fs::remove_file(&files[1])?;
    let report = check(&log, true)?;
    ensure!(report.first_break.map(|b| b.kind) == Some(BreakKind::Removed));
    Ok(())
}

fn audited_verifier(log: &LogDir) -> Result<(Verifier, TestKey, Arc<AuditLog>)> {
    let key = TestKey::from_seed("audit key")?;
    let registry = Arc::new(MemoryRegistry::new());
    registry.add_device(DeviceRecord {
        id: "tpm-dev-1".into(),
        ek_cert_sha256: "ab".repeat(32),
        ak_public: vec![0, 1, 2, 3],
        clock: DeviceClock::default(),
        firmware_version: 7,
        pcr_baseline: vec![[0u8; 32]; 8],
        enrolled_unix: verify_support::T0,
        revoked: false,
    })?;
    let mut registered = key.registered("laptop", KeyLevel::Tpm);
    registered.device_id = Some("tpm-dev-1".into());
    registry.add(registered)?;
    let audit = Arc::new(AuditLog::open(&log.settings)?);
    let verifier = Verifier::new(
        VerifierConfig::new(verify_support::AUDIENCE, ["api.example.com"]),
        registry,
        Arc::new(MemoryReplayCache::new(1_000)),
    )?
    .with_audit_log(Arc::clone(&audit));
    Ok((verifier, key, audit))
}

fn get(path: &str) -> TestRequest {
    TestRequest::new("GET", path, "", "api.example.com").header("user-agent", "audit-test/1")
}

#[test]
fn audit_every_decision_of_the_verify_path_is_recorded_with_its_code() -> Result<()> {
    let log = log_dir(|_| {})?;
    let (verifier, key, audit) = audited_verifier(&log)?;
    let signed = sign(&key, &get("/orders"), &SignOptions::default())?;
    let verdict = |request: &TestRequest| {
        request.with_parts(|parts| verifier.verify(parts, &request.body_sha256(), at(0)))
    };
    ensure!(verdict(&signed).is_ok());
    let replayed = verdict(&signed).err().map(|r| r.code());
    ensure!(replayed == Some(RejectCode::ReplayedNonce));
    let unsigned = verdict(&get("/orders")).err().map(|r| r.code());
    ensure!(unsigned == Some(RejectCode::MissingAuthorization));
    audit.sync().map_err(|e| anyhow::anyhow!("{e}"))?;
    let decisions: Vec<_> = records(&log)?
        .into_iter()
        .filter(|r| r["kind"] == "decision")
        .collect();
    ensure!(decisions.len() == 3, "{decisions:?}");
    let accepted = &decisions[0];
    ensure!(accepted["outcome"] == "accepted" && accepted["code"] == "ok");
    ensure!(accepted["key"] == key.id.as_str());
    ensure!(accepted["device"] == "tpm-dev-1" && accepted["level"] == "tpm");
    ensure!(accepted["method"] == "GET" && accepted["route"] == "/orders");
    ensure!(accepted["user_agent"] == "audit-test/1");
    let replay = &decisions[1];
    ensure!(replay["outcome"] == "refused" && replay["code"] == "replayed_nonce");
    ensure!(replay["claimed_key"] == key.id.as_str(), "{replay:?}");
    ensure!(decisions[2]["code"] == "missing_authorization");
    ensure!(decisions[2].get("claimed_key").is_none());
    drop(verifier);
    audit.close();
    ensure!(check(&log, true)?.first_break.is_none());
    Ok(())
}

#[test]
fn audit_a_log_that_cannot_take_the_record_refuses_the_request() -> Result<()> {
    let log = log_dir(|_| {})?;
    let (verifier, key, audit) = audited_verifier(&log)?;
    audit.close();
    let signed = sign(&key, &get("/orders"), &SignOptions::default())?;
    let verdict = signed.with_parts(|parts| verifier.verify(parts, &signed.body_sha256(), at(0)));
    ensure!(verdict.err().map(|r| r.code()) == Some(RejectCode::VerifierUnavailable));
    Ok(())
}

#[test]
fn audit_when_full_drop_answers_and_counts_the_lost_record() -> Result<()> {
    let log = log_dir(|settings| settings.when_full = WhenFull::Drop)?;
    let (verifier, key, audit) = audited_verifier(&log)?;
    audit.close();
    let signed = sign(&key, &get("/orders"), &SignOptions::default())?;
    let verdict = signed.with_parts(|parts| verifier.verify(parts, &signed.body_sha256(), at(0)));
    ensure!(verdict.is_ok());
    Ok(())
}

fn export_to_vec(log: &LogDir, query: &ExportQuery, format: ExportFormat) -> Result<Vec<u8>> {
    let files = chain_files(&log.dir)?;
    let inputs = files
        .iter()
        .map(|path| {
            Ok((
                path.display().to_string(),
                BufReader::new(fs::File::open(path)?),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::new();
    hwsign_verifier::audit::export(inputs, query, format, &mut out)?;
    Ok(out)
}

#[test]
fn audit_a_filtered_export_holds_the_matches_and_still_verifies() -> Result<()> {
    let log = admin_log(20)?;
    let query = ExportQuery {
        filter: vec![("action".into(), "revoke_device".into())],
        ..ExportQuery::default()
    };
    let jsonl = export_to_vec(&log, &query, ExportFormat::Jsonl)?;
    let text = String::from_utf8(jsonl.clone())?;
    let whole: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let matched = whole
        .iter()
        .filter(|r| r["action"] == "revoke_device")
        .count();
    ensure!(matched == 7, "{matched}");
    ensure!(whole.iter().all(|r| r["action"] == "revoke_device"
        || r["omitted"] == true
        || r["kind"] == "checkpoint"));
    ensure!(whole.last().map(|r| r["kind"].clone()) == Some(Value::from("checkpoint")));
    let options = CheckOptions {
        key: Some(log.public.clone()),
        allow_omitted: true,
        ..CheckOptions::default()
    };
    let report = hwsign_verifier::audit::verify(
        [("export".to_owned(), &jsonl[..])],
        None::<&[u8]>,
        options.clone(),
    )?;
    ensure!(
        report.first_break.is_none() && report.omitted > 0,
        "{report:?}"
    );
    // A matched record changed in the export is found.
    let tampered = text.replacen("revoke_device", "list_sessions", 1);
    let report = hwsign_verifier::audit::verify(
        [("export".to_owned(), tampered.as_bytes())],
        None::<&[u8]>,
        options,
    )?;
    ensure!(report.first_break.map(|b| b.kind) == Some(BreakKind::Edited));
    // Stand-ins are refused in a log.
    let strict = CheckOptions {
        key: Some(log.public.clone()),
        ..CheckOptions::default()
    };
    let report =
        hwsign_verifier::audit::verify([("export".to_owned(), &jsonl[..])], None::<&[u8]>, strict)?;
    ensure!(report.first_break.is_some());
    // CSV: a header and the matching rows.
    let csv = String::from_utf8(export_to_vec(&log, &query, ExportFormat::Csv)?)?;
    let rows: Vec<&str> = csv.lines().collect();
    ensure!(rows[0].starts_with("seq,ts,kind,outcome,code,key"));
    ensure!(rows.len() == 8, "{csv}");
    Ok(())
}

#[test]
fn audit_an_export_outside_its_time_range_is_empty() -> Result<()> {
    let log = admin_log(5)?;
    let query = ExportQuery {
        from: Some(0),
        to: Some(1),
        ..ExportQuery::default()
    };
    ensure!(export_to_vec(&log, &query, ExportFormat::Jsonl)?.is_empty());
    Ok(())
}

/// A log generated as it is read: `records` sealed records, counting the bytes handed out.
struct GeneratedLog {
    sealer: Sealer,
    left: u64,
    pending: Vec<u8>,
    produced: Rc<Cell<u64>>,
}

impl Read for GeneratedLog {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() && self.left > 0 {
            self.left -= 1;
            let mut fields = Map::new();
            for (name, value) in [
                ("kind", "admin"),
                ("actor", "alice"),
                ("action", "list_sessions"),
            ] {
                fields.insert(name.into(), Value::from(value));
            }
            fields.insert("target".into(), Value::from("x".repeat(100)));
            fields.insert("ts".into(), Value::from(1_800_000_000));
            self.pending = self.sealer.seal(fields).map_err(std::io::Error::other)?;
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        self.produced.set(self.produced.get() + n as u64);
        Ok(n)
    }
}

/// Checks on every write that the export has not read more than `bound` bytes ahead.
struct LagCheck {
    produced: Rc<Cell<u64>>,
    written: u64,
    bound: u64,
    worst: u64,
}

impl Write for LagCheck {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        let ahead = self.produced.get().saturating_sub(self.written);
        self.worst = self.worst.max(ahead);
        if ahead > self.bound {
            return Err(std::io::Error::other(format!(
                "the export read {ahead} bytes ahead of what it wrote"
            )));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn audit_export_streams_a_log_far_larger_than_its_buffers() -> Result<()> {
    const RECORDS: u64 = 100_000;
    let produced = Rc::new(Cell::new(0));
    let log = GeneratedLog {
        sealer: Sealer::genesis(),
        left: RECORDS,
        pending: Vec::new(),
        produced: Rc::clone(&produced),
    };
    let mut sink = LagCheck {
        produced: Rc::clone(&produced),
        written: 0,
        bound: 256 * 1024,
        worst: 0,
    };
    let summary = hwsign_verifier::audit::export(
        [("generated".to_owned(), BufReader::new(log))],
        &ExportQuery::default(),
        ExportFormat::Jsonl,
        &mut sink,
    )?;
    ensure!(summary.matched == RECORDS);
    ensure!(produced.get() > 20 * 1024 * 1024, "{}", produced.get());
    ensure!(sink.written == produced.get());
    ensure!(sink.worst <= 256 * 1024);
    Ok(())
}

/// The clock at the signing time of the test requests.
#[derive(Debug)]
struct FixedClock;

impl hwsign_verifier::Clock for FixedClock {
    fn now(&self) -> std::time::SystemTime {
        at(0)
    }
}

#[tokio::test]
async fn audit_the_middleware_records_the_decision_with_the_source_address() -> Result<()> {
    let log = log_dir(|_| {})?;
    let (verifier, key, audit) = audited_verifier(&log)?;
    let verifier = verifier.with_clock(Arc::new(FixedClock));
    let signed = sign(&key, &get("/orders"), &SignOptions::default())?;
    let peer: std::net::SocketAddr = "192.0.2.7:4711".parse()?;
    let mut builder = http::Request::builder().method("GET").uri("/orders");
    for (name, value) in &signed.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder
        .extension(axum::extract::ConnectInfo(peer))
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let (head, body) = request.into_parts();
    let accepted = hwsign_verifier::layer::authenticate(&verifier, &head, body).await;
    ensure!(accepted.is_ok(), "{accepted:?}");
    // The same request again through the same path: refused, recorded with its code.
    let again = hwsign_verifier::layer::authenticate(
        &verifier,
        &head,
        http_body_util::Full::new(bytes::Bytes::new()),
    )
    .await;
    ensure!(again.err().map(|r| r.code()) == Some(RejectCode::ReplayedNonce));
    audit.sync().map_err(|e| anyhow::anyhow!("{e}"))?;
    let decisions: Vec<_> = records(&log)?
        .into_iter()
        .filter(|r| r["kind"] == "decision")
        .collect();
    ensure!(decisions.len() == 2, "{decisions:?}");
    ensure!(decisions[0]["outcome"] == "accepted" && decisions[0]["source"] == "192.0.2.7");
    ensure!(decisions[1]["code"] == "replayed_nonce" && decisions[1]["source"] == "192.0.2.7");
    ensure!(decisions[1]["user_agent"] == "audit-test/1");
    Ok(())
}

fn search_page(
    log: &LogDir,
    query: &ExportQuery,
    after: Option<u64>,
    limit: usize,
) -> Result<hwsign_verifier::audit::SearchPage> {
    let inputs = hwsign_verifier::audit::files_after(&log.dir, after)?
        .into_iter()
        .map(|path| {
            Ok((
                path.display().to_string(),
                BufReader::new(fs::File::open(&path)?),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(hwsign_verifier::audit::search(inputs, query, after, limit)?)
}

#[test]
fn audit_search_pages_through_the_matches_after_a_cursor() -> Result<()> {
    let log = admin_log(30)?;
    let query = ExportQuery {
        filter: vec![("action".into(), "revoke_device".into())],
        ..ExportQuery::default()
    };
    // 10 revocations (i = 0, 3, …, 27) in pages of 4: 4 + 4 + 2.
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = search_page(&log, &query, after, 4)?;
        pages += 1;
        ensure!(page.records.len() <= 4);
        for record in &page.records {
            ensure!(record.get("action") == Some(&Value::from("revoke_device")));
            seen.push(
                record
                    .get("target")
                    .and_then(Value::as_str)
                    .context("target")?
                    .to_owned(),
            );
        }
        match page.next_after_seq {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    ensure!(pages == 3, "{pages} pages");
    let expected: Vec<String> = (0..30).step_by(3).map(|i| format!("dev-{i}")).collect();
    ensure!(seen == expected, "{seen:?}");
    // A time range past every record matches nothing.
    let future = ExportQuery {
        from: Some(i64::MAX - 1),
        ..ExportQuery::default()
    };
    ensure!(search_page(&log, &future, None, 10)?.records.is_empty());
    Ok(())
}

#[test]
fn audit_search_skips_whole_files_before_the_cursor_and_keeps_the_order() -> Result<()> {
    let log = log_dir(|settings| {
        settings.rotate_bytes = 2048;
        settings.checkpoint_every_records = 4;
    })?;
    let audit = AuditLog::open(&log.settings)?;
    for i in 0..60 {
        audit
            .record(AuditEvent::admin("bob", "x", Some(&format!("t-{i}")), "ok"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    audit.close();
    let files = chain_files(&log.dir)?;
    ensure!(files.len() > 3, "rotation expected: {files:?}");
    let all = records(&log)?;
    let last_seq = all
        .iter()
        .filter_map(|r| r.get("seq").and_then(Value::as_u64))
        .max()
        .context("records")?;
    let after = last_seq - 5;
    let kept = hwsign_verifier::audit::files_after(&log.dir, Some(after))?;
    ensure!(kept.len() < files.len(), "{kept:?}");
    let page = search_page(&log, &ExportQuery::default(), Some(after), 100)?;
    let seqs: Vec<u64> = page
        .records
        .iter()
        .filter_map(|r| r.get("seq").and_then(Value::as_u64))
        .collect();
    ensure!(
        seqs == ((after + 1)..=last_seq).collect::<Vec<_>>(),
        "{seqs:?}"
    );
    Ok(())
}
