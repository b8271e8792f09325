//! `tpm_overhead`: the agent's strict TPM sign round trip ÷ a raw tss-esapi sign on the same
//! swtpm. The raw loop does per signature what the agent does per request — TPM2_Load of the key
//! blob under a storage root key kept loaded, TPM2_Sign, TPM2_FlushContext — so the ratio is the
//! agent's own cost (HTTP, JSON, canonicalization, worker thread hand-off, audit), not a
//! difference in TPM work.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Instant;

use anyhow::{Context as _, Result};
use hwsign_bench::fixtures::BenchRequest;
use hwsign_client::AgentClient;
use hwsign_test_support::swtpm::Swtpm;
use tss_esapi::Context;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccParameter, EccPoint, EccScheme, HashScheme, HashcheckTicket,
    KeyDerivationFunctionScheme, Private, Public, PublicBuilder, PublicEccParametersBuilder,
    SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

use crate::Plan;
use crate::agent_proc::AgentProcess;
use crate::delegated::Measured;
use crate::figure::{Figure, Goal};
use crate::measure::{median, us};

/// What the TPM phase measured.
#[derive(Debug)]
pub(crate) struct TpmResult {
    /// `tpm_overhead`.
    pub figure: Figure,
    /// Strict TPM signs per second through the agent (the denominator of `delegated_speedup`).
    pub strict_signs_per_sec: f64,
    /// Delegated signs through the agent, same key, same connection pattern; or why not
    /// measured.
    pub delegated: Result<Measured, String>,
}

fn srk_template() -> Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    let parameters = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()?;
    let zero = EccParameter::try_from(vec![0u8; 32])?;
    Ok(PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::new(zero.clone(), zero))
        .build()?)
}

fn signing_template() -> Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .build()?;
    let parameters = PublicEccParametersBuilder::new()
        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
        .with_curve(EccCurve::NistP256)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .with_is_signing_key(true)
        .with_is_decryption_key(false)
        .with_restricted(false)
        .build()?;
    Ok(PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()?)
}

/// A raw tss-esapi client: SRK loaded, one signing key's blobs.
struct RawTpm {
    ctx: Context,
    srk: KeyHandle,
    private: Private,
    public: Public,
}

impl RawTpm {
    fn connect(tcti: &str) -> Result<Self> {
        let mut ctx = Context::new(TctiNameConf::from_str(tcti)?)?;
        let srk = ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Owner, srk_template()?, None, None, None, None)
                    .map_err(anyhow::Error::from)
            })?
            .key_handle;
        let created = ctx.execute_with_session(Some(AuthSession::Password), |c| {
            c.create(srk, signing_template()?, None, None, None, None)
                .map_err(anyhow::Error::from)
        })?;
        Ok(Self {
            ctx,
            srk,
            private: created.out_private,
            public: created.out_public,
        })
    }

    /// Load, sign, flush: seconds per signature over `count`.
    fn sign_loop(&mut self, count: usize) -> Result<f64> {
        let digest = Digest::try_from(vec![7u8; 32])?;
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })?;
        let start = Instant::now();
        for _ in 0..count {
            let srk = self.srk;
            let (private, public) = (self.private.clone(), self.public.clone());
            let handle = self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.load(srk, private, public)
                })?;
            self.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.sign(
                        handle,
                        digest.clone(),
                        SignatureScheme::Null,
                        ticket.clone(),
                    )
                })?;
            self.ctx.flush_context(handle.into())?;
        }
        Ok(start.elapsed().as_secs_f64() / count.max(1) as f64)
    }
}

impl Drop for RawTpm {
    fn drop(&mut self) {
        let _ = self.ctx.flush_context(self.srk.into());
    }
}

fn raw_batch(tcti: &str, count: usize) -> Result<f64> {
    let mut tpm = RawTpm::connect(tcti).context("raw tss-esapi client")?;
    tpm.sign_loop(3)?;
    tpm.sign_loop(count)
}

/// Strict signs through an agent started on `dir`: seconds per sign over `count`.
async fn agent_batch(
    binary: &Path,
    dir: &Path,
    backends: &str,
    key_id: &str,
    count: usize,
) -> Result<f64> {
    let mut agent = AgentProcess::start(binary, dir, backends).await?;
    let client = AgentClient::new(agent.socket());
    let request = BenchRequest::realistic().sign_request(key_id);
    for _ in 0..3 {
        client.sign(&request).await?;
    }
    let start = Instant::now();
    for _ in 0..count {
        client.sign(&request).await?;
    }
    let per_sign = start.elapsed().as_secs_f64() / count.max(1) as f64;
    agent.stop()?;
    Ok(per_sign)
}

/// Runs the TPM phase against a fresh swtpm: rounds of (raw batch, agent batch), alternating
/// which goes first; the agent is started and stopped around each of its batches because swtpm
/// serves one client at a time.
pub(crate) async fn run(plan: &Plan, binary: &Path) -> Result<TpmResult> {
    let swtpm = Swtpm::start_tcp()?;
    let tcti = swtpm.tcti();
    let dir = tempfile::tempdir()?;
    let backends = format!("[backends.software]\nenabled = false\n[backends.tpm]\ntcti = {tcti:?}");
    let key_id = {
        let mut agent = AgentProcess::start(binary, dir.path(), &backends).await?;
        let key = AgentClient::new(agent.socket())
            .create_key("tpm", "bench")
            .await?;
        agent.stop()?;
        key.id
    };
    let batch = plan.tpm_signs.div_ceil(plan.tpm_rounds);
    let (mut ratios, mut agents, mut raws) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.tpm_rounds {
        let (a, r) = if round % 2 == 0 {
            let r = raw_batch(&tcti, batch)?;
            (
                agent_batch(binary, dir.path(), &backends, &key_id, batch).await?,
                r,
            )
        } else {
            let a = agent_batch(binary, dir.path(), &backends, &key_id, batch).await?;
            (a, raw_batch(&tcti, batch)?)
        };
        ratios.push(a / r);
        agents.push(a);
        raws.push(r);
    }
    let (t_agent, t_raw) = (median(agents), median(raws));
    let delegated = delegated_rate(plan, binary, dir.path(), &backends, &key_id)
        .await
        .map_err(|e| format!("{e:#}"));
    Ok(TpmResult {
        figure: Figure::measured(
            "tpm_overhead",
            median(ratios),
            Goal::AtMost(1.10),
            format!(
                "agent strict TPM sign {} vs raw tss-esapi load+sign+flush {} (SRK kept loaded in both), swtpm over TCP, {} rounds",
                us(t_agent),
                us(t_raw),
                plan.tpm_rounds
            ),
        ),
        strict_signs_per_sec: 1.0 / t_agent,
        delegated,
    })
}

/// Restarts the agent on the same state with `key_id` in delegated mode, and the software
/// backend enabled with a key of its own, and measures both keys' sign round trips in
/// alternating batches on one connection each (`delegated_rtt_ratio`). The first delegated sign
/// creates the session key and has the TPM sign its statement; it is part of the warm-up.
async fn delegated_rate(
    plan: &Plan,
    binary: &Path,
    dir: &Path,
    backends: &str,
    key_id: &str,
) -> Result<Measured> {
    let backends = backends.replace(
        "[backends.software]\nenabled = false",
        "[backends.software]\nenabled = true",
    );
    let config = format!("{backends}\n[[key_rules]]\nkey_id = {key_id:?}\nmode = \"delegated\"");
    let mut agent = AgentProcess::start(binary, dir, &config).await?;
    let client = AgentClient::new(agent.socket());
    let software = client.create_key("software", "bench-software").await?;
    let request = BenchRequest::realistic().sign_request(key_id);
    let software_request = BenchRequest::realistic().sign_request(&software.id);
    let first = client.sign(&request).await?;
    anyhow::ensure!(
        first
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("x-hws-delegation")),
        "the agent did not sign in delegated mode (no X-Hws-Delegation header)"
    );
    let software_client = AgentClient::new(agent.socket());
    for _ in 0..plan.warmup {
        client.sign(&request).await?;
        software_client.sign(&software_request).await?;
    }
    let batch = plan.rtt_batch;
    let timed = |client: &AgentClient, request: &hwsign_proto::api::SignRequest| {
        let (client, request) = (client.clone(), request.clone());
        async move {
            let start = Instant::now();
            for _ in 0..batch {
                client.sign(&request).await?;
            }
            anyhow::Ok(start.elapsed().as_secs_f64() / batch.max(1) as f64)
        }
    };
    let (mut ratios, mut delegated, mut soft) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let (d, s) = if round % 2 == 0 {
            let d = timed(&client, &request).await?;
            (d, timed(&software_client, &software_request).await?)
        } else {
            let s = timed(&software_client, &software_request).await?;
            (timed(&client, &request).await?, s)
        };
        ratios.push(d / s);
        delegated.push(d);
        soft.push(s);
    }
    agent.stop()?;
    let delegated_rtt = median(delegated);
    Ok(Measured {
        signs_per_sec: 1.0 / delegated_rtt,
        rtt_ratio: median(ratios),
        delegated_rtt,
        software_rtt: median(soft),
    })
}
