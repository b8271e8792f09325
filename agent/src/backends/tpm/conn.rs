//! One live connection to the TPM: the ESYS context, the storage root key kept loaded while the
//! connection lasts, and helpers that guarantee every other transient object and session is
//! flushed, also on error paths (swtpm has three object slots).

use tss_esapi::Context;
use tss_esapi::constants::CapabilityType;
use tss_esapi::constants::StartupType;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::{KeyHandle, ObjectHandle, TpmHandle};
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, Private, Public};
use tss_esapi::tcti_ldr::TctiNameConf;

use super::ek::{self, EkInfo};
use super::error::{TpmError, tpm};
use super::templates;

/// First transient handle (TPM2_HT_TRANSIENT << 24).
const TRANSIENT_FIRST: u32 = 0x8000_0000;
/// Upper bound on handles listed at once; TPMs have a handful of slots.
const MAX_LISTED_HANDLES: u32 = 64;

/// A connected TPM.
pub(crate) struct Live {
    pub ctx: Context,
    /// The storage root key, loaded for the lifetime of the connection.
    pub srk: KeyHandle,
    /// The EK choice, looked up once per connection.
    ek: Option<EkInfo>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    /// Connects, starts the TPM if nobody did, flushes objects an earlier crashed client left
    /// behind, and re-creates the storage root key.
    pub(super) fn connect(tcti: &TctiNameConf) -> Result<Self, TpmError> {
        let mut ctx = Context::new(tcti.clone()).map_err(|source| TpmError::Connection {
            op: "connect",
            source,
        })?;
        ensure_started(&mut ctx)?;
        let leftovers = transient_handles(&mut ctx)?;
        for handle in &leftovers {
            flush_tpm_handle(&mut ctx, *handle)?;
        }
        if !leftovers.is_empty() {
            tracing::info!(
                count = leftovers.len(),
                "flushed transient objects left in the TPM"
            );
        }
        let template = templates::srk()?;
        let srk = tpm("CreatePrimary(SRK)", || {
            ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create_primary(Hierarchy::Owner, template.clone(), None, None, None, None)
            })
        })?
        .key_handle;
        Ok(Self { ctx, srk, ek: None })
    }

    /// The EK the backend uses (looked up in NV on first use).
    pub(super) fn ek_info(&mut self) -> Result<EkInfo, TpmError> {
        if let Some(ek) = &self.ek {
            return Ok(ek.clone());
        }
        let ek = ek::find(&mut self.ctx)?;
        self.ek = Some(ek.clone());
        Ok(ek)
    }

    /// Loads a key under the SRK. A missing SRK (TPM reset behind our back) is reported as a
    /// stale handle so the worker reconnects.
    pub(super) fn load_under_srk(
        &mut self,
        private: &Private,
        public: &Public,
    ) -> Result<KeyHandle, TpmError> {
        let srk = self.srk;
        tpm("Load", || {
            self.ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.load(srk, private.clone(), public.clone())
                })
        })
        .map_err(TpmError::stale_if_handle_missing)
    }

    /// The transient handles the TPM holds for this connection, SRK included.
    pub(super) fn transient_handles(&mut self) -> Result<Vec<u32>, TpmError> {
        transient_handles(&mut self.ctx)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // Best effort: without a resource manager the SRK would stay loaded in the TPM.
        let _ = self.ctx.flush_context(self.srk.into());
    }
}

/// Runs `f` with `handle` loaded and flushes it afterwards, whatever `f` returned.
pub(crate) fn with_flushed<T>(
    ctx: &mut Context,
    handle: impl Into<ObjectHandle>,
    f: impl FnOnce(&mut Context) -> Result<T, TpmError>,
) -> Result<T, TpmError> {
    let handle = handle.into();
    let result = f(ctx);
    let flushed = tpm("FlushContext", || ctx.flush_context(handle));
    match (result, flushed) {
        (Err(err), _) => Err(err),
        (Ok(_), Err(err)) => Err(err),
        (Ok(value), Ok(())) => Ok(value),
    }
}

/// Calls TPM2_Startup(CLEAR) if the TPM answers TPM_RC_INITIALIZE (a simulator started without
/// `startup-clear`); firmware does this on real machines.
fn ensure_started(ctx: &mut Context) -> Result<(), TpmError> {
    match tpm("GetCapability", || {
        ctx.get_capability(CapabilityType::Handles, TRANSIENT_FIRST, 1)
    }) {
        Err(TpmError::Command {
            source: tss_esapi::Error::Tss2Error(code),
            ..
        }) if code.kind() == Some(Tss2ResponseCodeKind::Initialize) => {
            tracing::info!("TPM not started; sending TPM2_Startup(CLEAR)");
            tpm("Startup", || ctx.startup(StartupType::Clear))
        }
        Err(err) => Err(err),
        Ok(_) => Ok(()),
    }
}

fn transient_handles(ctx: &mut Context) -> Result<Vec<u32>, TpmError> {
    let (data, _more) = tpm("GetCapability(handles-transient)", || {
        ctx.get_capability(CapabilityType::Handles, TRANSIENT_FIRST, MAX_LISTED_HANDLES)
    })?;
    match data {
        CapabilityData::Handles(list) => Ok(list.into_inner().into_iter().map(u32::from).collect()),
        _ => Err(TpmError::Unexpected(
            "GetCapability(handles) returned another capability".into(),
        )),
    }
}

fn flush_tpm_handle(ctx: &mut Context, handle: u32) -> Result<(), TpmError> {
    let tpm_handle = TpmHandle::try_from(handle)
        .map_err(|e| TpmError::Unexpected(format!("handle {handle:#x}: {e}")))?;
    let object = tpm("TR_FromTPMPublic", || {
        ctx.execute_without_session(|ctx| ctx.tr_from_tpm_public(tpm_handle))
    })?;
    tpm("FlushContext", || ctx.flush_context(object))
}
