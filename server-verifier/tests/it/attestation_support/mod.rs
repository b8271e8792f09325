//! A swtpm driven with tpm2-tools to produce real attestation evidence, shared by the
//! `attestation_*` tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hwsign_proto::attestation::TpmEvidence;
use hwsign_test_support::swtpm::Swtpm;
use hwsign_verifier::attestation::TrustAnchors;

/// swtpm_setup's persistent RSA-2048 EK.
pub(crate) const EK_RSA: u32 = 0x8101_0001;
/// swtpm_setup's persistent ECC P-384 EK.
pub(crate) const EK_P384: u32 = 0x8101_0016;
/// NV index of the RSA-2048 EK certificate.
pub(crate) const EK_RSA_CERT_NV: u32 = 0x01c0_0002;
/// NV index of the ECC P-384 EK certificate.
pub(crate) const EK_P384_CERT_NV: u32 = 0x01c0_0016;
/// A standard-template ECC P-256 EK (swtpm_setup makes none), persisted here by
/// [`TpmRig::create_p256_ek`].
pub(crate) const EK_P256: u32 = 0x8101_0002;
/// The ECC P-256 AK (endorsement hierarchy, under the RSA EK), persisted here.
pub(crate) const AK: u32 = 0x8100_0010;
/// The request-signing key (ECC P-256, fixedTPM etc.), persisted here.
pub(crate) const KEY: u32 = 0x8100_0011;
/// The storage primary the signing keys live under.
pub(crate) const PRIMARY: u32 = 0x8100_0001;

/// Attributes of a proper request-signing key.
pub(crate) const SIGNING_KEY_ATTRIBUTES: &str =
    "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign";

/// A swtpm with an AK and a signing key, and a work dir for tool output.
#[derive(Debug)]
pub(crate) struct TpmRig {
    pub tpm: Swtpm,
    pub work: PathBuf,
}

impl TpmRig {
    /// A fresh TPM with the AK at [`AK`] and a signing key at [`KEY`].
    pub(crate) fn new() -> Result<Self> {
        let tpm = Swtpm::start()?;
        let work = tpm.scratch();
        let rig = Self { tpm, work };
        rig.create_ak(AK, &["-G", "ecc", "-g", "sha256", "-s", "ecdsa"])?;
        rig.tool(
            "tpm2_createprimary",
            &["-C", "o", "-g", "sha256", "-G", "ecc", "-c", "primary.ctx"],
        )?;
        rig.tool(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", "primary.ctx", &hex_handle(PRIMARY)],
        )?;
        rig.create_key(KEY, "ecc256:ecdsa-sha256", SIGNING_KEY_ATTRIBUTES)?;
        Ok(rig)
    }

    /// Runs a tpm2-tools program in the work dir, then flushes transient objects (swtpm has
    /// only three slots and no resource manager). Returns stdout.
    pub(crate) fn tool(&self, program: &str, args: &[&str]) -> Result<Vec<u8>> {
        let output = self.command(program).args(args).output()?;
        if !output.status.success() {
            bail!(
                "{program} {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let flush = self.command("tpm2_flushcontext").arg("-t").output()?;
        ensure!(flush.status.success(), "tpm2_flushcontext failed");
        Ok(output.stdout)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = self.tpm.tool(program);
        command.current_dir(&self.work);
        command
    }

    /// Reads a file the tools wrote into the work dir.
    pub(crate) fn read(&self, name: &str) -> Result<Vec<u8>> {
        std::fs::read(self.work.join(name)).with_context(|| format!("reading {name}"))
    }

    /// Writes a file into the work dir.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        Ok(std::fs::write(self.work.join(name), bytes)?)
    }

    /// Creates an AK under the RSA EK with `args` (algorithm, hash, scheme) and persists it.
    pub(crate) fn create_ak(&self, handle: u32, args: &[&str]) -> Result<()> {
        let mut all = vec![
            "-C",
            "0x81010001",
            "-c",
            "ak.ctx",
            "-u",
            "ak.pub",
            "-n",
            "ak.name",
        ];
        all.extend_from_slice(args);
        self.tool("tpm2_createak", &all)?;
        self.tool(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", "ak.ctx", &hex_handle(handle)],
        )?;
        Ok(())
    }

    /// Creates an EK from the standard ECC P-256 template and persists it at [`EK_P256`].
    pub(crate) fn create_p256_ek(&self) -> Result<()> {
        self.tool("tpm2_createek", &["-G", "ecc", "-c", "ek256.ctx"])?;
        self.tool(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", "ek256.ctx", &hex_handle(EK_P256)],
        )?;
        Ok(())
    }

    /// Creates a key under the storage primary with `algorithm` and `attributes`, and persists it.
    pub(crate) fn create_key(&self, handle: u32, algorithm: &str, attributes: &str) -> Result<()> {
        let primary = hex_handle(PRIMARY);
        self.tool(
            "tpm2_create",
            &[
                "-C", &primary, "-G", algorithm, "-a", attributes, "-u", "key.pub", "-r",
                "key.priv",
            ],
        )?;
        self.tool(
            "tpm2_load",
            &[
                "-C", &primary, "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx",
            ],
        )?;
        self.tool(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", "key.ctx", &hex_handle(handle)],
        )?;
        Ok(())
    }

    /// The marshalled TPMT_PUBLIC of a persistent object.
    pub(crate) fn public_area(&self, handle: u32) -> Result<Vec<u8>> {
        self.tool(
            "tpm2_readpublic",
            &["-c", &hex_handle(handle), "-f", "tss", "-o", "public.tss"],
        )?;
        let tpm2b = self.read("public.tss")?;
        ensure!(tpm2b.len() > 2, "short TPM2B_PUBLIC");
        let size = usize::from(u16::from_be_bytes([tpm2b[0], tpm2b[1]]));
        ensure!(tpm2b.len() == 2 + size, "TPM2B_PUBLIC size mismatch");
        Ok(tpm2b[2..].to_vec())
    }

    /// The Name tpm2-tools reports for a persistent object.
    pub(crate) fn name_from_tools(&self, handle: u32) -> Result<Vec<u8>> {
        let yaml = String::from_utf8(self.tool("tpm2_readpublic", &["-c", &hex_handle(handle)])?)?;
        let line = yaml
            .lines()
            .find_map(|line| line.strip_prefix("name: "))
            .context("no name in tpm2_readpublic output")?;
        Ok(hex::decode(line.trim())?)
    }

    /// TPM2_Certify(object, signer, qualifying data = nonce), sent raw because tpm2_certify
    /// 5.4 cannot pass qualifying data. Returns (TPMS_ATTEST, TPMT_SIGNATURE) bytes.
    pub(crate) fn certify(
        &self,
        object: u32,
        signer: u32,
        nonce: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        // Two password sessions with empty auth: both objects have userWithAuth.
        let password_session = [0x40, 0x00, 0x00, 0x09, 0, 0, 0, 0, 0];
        let mut body = Vec::new();
        body.extend_from_slice(&0x0000_0148u32.to_be_bytes()); // TPM_CC_Certify
        body.extend_from_slice(&object.to_be_bytes());
        body.extend_from_slice(&signer.to_be_bytes());
        body.extend_from_slice(&18u32.to_be_bytes());
        body.extend_from_slice(&password_session);
        body.extend_from_slice(&password_session);
        body.extend_from_slice(&u16::try_from(nonce.len())?.to_be_bytes());
        body.extend_from_slice(nonce);
        body.extend_from_slice(&0x0010u16.to_be_bytes()); // inScheme NULL: the AK's own scheme
        let mut command = Vec::new();
        command.extend_from_slice(&0x8002u16.to_be_bytes()); // TPM_ST_SESSIONS
        command.extend_from_slice(&u32::try_from(6 + body.len())?.to_be_bytes());
        command.extend_from_slice(&body);
        self.write("certify.cmd", &command)?;
        let mut response = Vec::new();
        // TPM_RC_RETRY (0x922) is what a TPM says right after a reboot: send it again, a few
        // times at most.
        for _ in 0..20 {
            let output = self
                .command("tpm2_send")
                .args(["-o", "certify.rsp"])
                .stdin(std::fs::File::open(self.work.join("certify.cmd"))?)
                .output()?;
            ensure!(output.status.success(), "tpm2_send failed");
            response = self.read("certify.rsp")?;
            ensure!(response.len() >= 10, "short certify response");
            if response[6..10] != 0x922u32.to_be_bytes() {
                break;
            }
        }
        let rc = u32::from_be_bytes(response[6..10].try_into()?);
        ensure!(rc == 0, "TPM2_Certify failed: 0x{rc:x}");
        ensure!(response.len() > 16, "short certify response");
        // tag, size, rc, parameterSize, then TPM2B_ATTEST and TPMT_SIGNATURE, then 2 auth areas
        // of 5 bytes each.
        let attest_len = usize::from(u16::from_be_bytes([response[14], response[15]]));
        let attest = response[16..16 + attest_len].to_vec();
        let signature = response[16 + attest_len..response.len() - 10].to_vec();
        Ok((attest, signature))
    }

    /// TPM2_Quote(sha256 PCRs 0–7, nonce) by `signer`. Returns (TPMS_ATTEST, TPMT_SIGNATURE).
    pub(crate) fn quote(&self, signer: u32, nonce: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        self.quote_signed_with(signer, nonce, "sha256")
    }

    /// [`Self::quote`] with the signature's hash algorithm (an AK whose scheme fixes SHA-1 needs
    /// `sha1`).
    pub(crate) fn quote_signed_with(
        &self,
        signer: u32,
        nonce: &[u8],
        hash: &str,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        self.tool(
            "tpm2_quote",
            &[
                "-c",
                &hex_handle(signer),
                "-l",
                "sha256:0,1,2,3,4,5,6,7",
                "-q",
                &hex::encode(nonce),
                "-g",
                hash,
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
            ],
        )?;
        Ok((self.read("quote.msg")?, self.read("quote.sig")?))
    }

    /// sha256 PCRs 0–7 as lower-case hex, from tpm2_pcrread.
    pub(crate) fn pcrs(&self) -> Result<Vec<String>> {
        let yaml = String::from_utf8(self.tool("tpm2_pcrread", &["sha256:0,1,2,3,4,5,6,7"])?)?;
        let values: Vec<String> = yaml
            .lines()
            .filter_map(|line| line.split_once(": 0x"))
            .map(|(_, value)| value.trim().to_ascii_lowercase())
            .collect();
        ensure!(values.len() == 8, "expected 8 PCRs, got {}", values.len());
        Ok(values)
    }

    /// Extends PCR `index` (sha256) with `digest`.
    pub(crate) fn extend_pcr(&self, index: u32, digest: &[u8; 32]) -> Result<()> {
        self.tool(
            "tpm2_pcrextend",
            &[&format!("{index}:sha256={}", hex::encode(digest))],
        )?;
        Ok(())
    }

    /// The EK certificate from NV.
    pub(crate) fn ek_certificate(&self, nv_index: u32) -> Result<Vec<u8>> {
        self.tool(
            "tpm2_nvread",
            &["-C", "o", &format!("0x{nv_index:08x}"), "-o", "ek.der"],
        )?;
        self.read("ek.der")
    }

    /// Evidence as the agent sends it, for `key` certified and quoted by `ak` over `nonce`,
    /// with the RSA EK.
    pub(crate) fn evidence_with(&self, ak: u32, key: u32, nonce: &[u8]) -> Result<TpmEvidence> {
        self.evidence_signed_with(ak, key, nonce, "sha256")
    }

    /// [`Self::evidence_with`], the quote signed with `hash`.
    pub(crate) fn evidence_signed_with(
        &self,
        ak: u32,
        key: u32,
        nonce: &[u8],
        hash: &str,
    ) -> Result<TpmEvidence> {
        let (certify_info, certify_signature) = self.certify(key, ak, nonce)?;
        let (quote_info, quote_signature) = self.quote_signed_with(ak, nonce, hash)?;
        Ok(TpmEvidence {
            ek_certificate: STANDARD.encode(self.ek_certificate(EK_RSA_CERT_NV)?),
            ek_certificate_nv_index: EK_RSA_CERT_NV,
            ek_chain: Vec::new(),
            ek_public: STANDARD.encode(self.public_area(EK_RSA)?),
            ak_public: STANDARD.encode(self.public_area(ak)?),
            key_public: STANDARD.encode(self.public_area(key)?),
            certify_info: STANDARD.encode(certify_info),
            certify_signature: STANDARD.encode(certify_signature),
            quote_info: STANDARD.encode(quote_info),
            quote_signature: STANDARD.encode(quote_signature),
            pcrs_sha256: self.pcrs()?,
        })
    }

    /// Evidence for the standard AK and key.
    pub(crate) fn evidence(&self, nonce: &[u8]) -> Result<TpmEvidence> {
        self.evidence_with(AK, KEY, nonce)
    }

    /// This TPM's EK trust anchors (swtpm's local CA).
    pub(crate) fn anchors(&self) -> Result<TrustAnchors> {
        Ok(TrustAnchors::from_pem_files(
            &[self.tpm.ca_root_pem()],
            &[self.tpm.ca_intermediate_pem()],
        )?)
    }

    /// TPM2_ActivateCredential with `ak` and `ek`, from a credential in tpm2-tools' file format.
    /// The RSA and P-256 EKs need a PolicySecret(endorsement) session; swtpm's P-384 EK template
    /// allows the (empty) password.
    pub(crate) fn activate(
        &self,
        ak: u32,
        ek: u32,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>> {
        let mut file = Vec::new();
        file.extend_from_slice(&0xbadc_c0deu32.to_be_bytes());
        file.extend_from_slice(&1u32.to_be_bytes());
        file.extend_from_slice(&u16::try_from(credential_blob.len())?.to_be_bytes());
        file.extend_from_slice(credential_blob);
        file.extend_from_slice(&u16::try_from(encrypted_secret.len())?.to_be_bytes());
        file.extend_from_slice(encrypted_secret);
        self.write("credential.in", &file)?;
        let _ = std::fs::remove_file(self.work.join("activated.out"));
        let mut args = vec![
            "-c".to_owned(),
            hex_handle(ak),
            "-C".to_owned(),
            hex_handle(ek),
            "-i".to_owned(),
            "credential.in".to_owned(),
            "-o".to_owned(),
            "activated.out".to_owned(),
        ];
        let needs_policy = ek != EK_P384;
        if needs_policy {
            self.tool(
                "tpm2_startauthsession",
                &["--policy-session", "-S", "session.ctx"],
            )?;
            self.tool("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"])?;
            args.push("-P".to_owned());
            args.push("session:session.ctx".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = self.tool("tpm2_activatecredential", &args);
        if needs_policy {
            let _ = self
                .command("tpm2_flushcontext")
                .arg("session.ctx")
                .output();
        }
        result?;
        self.read("activated.out")
    }
}

/// `0x8100000a` form.
pub(crate) fn hex_handle(handle: u32) -> String {
    format!("0x{handle:08x}")
}

/// A fresh random 32-byte nonce.
pub(crate) fn nonce() -> Result<[u8; 32]> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    Ok(nonce)
}
