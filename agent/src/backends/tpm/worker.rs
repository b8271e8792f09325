//! The thread that owns the only TPM connection. The ESYS stack blocks and is not thread-safe,
//! and swtpm serves one client at a time, so every TPM command of the backend runs here, one
//! job at a time, taken from a channel. A lost connection is re-established on the next job.

use std::sync::mpsc::Receiver;

use tss_esapi::constants::CapabilityType;
use tss_esapi::structures::{Private, Public};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::UnMarshall;

use super::conn::Live;
use super::ek::EkInfo;
use super::error::{TpmError, tpm};
use super::ops::{self, AkBlobs, Blobs};
use super::store::{self, AkFile, Store};

/// A unit of work; it sends its own reply.
pub(crate) type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// Messages to the worker.
pub(crate) enum Message {
    Job(Job),
    Shutdown,
}

/// State that outlives a connection.
#[derive(Debug)]
pub(crate) struct Persistent {
    pub store: Store,
    ak: Option<AkBlobs>,
}

impl Persistent {
    pub(super) fn new(store: Store, ak: Option<AkBlobs>) -> Self {
        Self { store, ak }
    }

    /// The attestation key under the EK this TPM has a certificate for, created (and persisted)
    /// on first use.
    pub(super) fn ensure_ak(&mut self, live: &mut Live) -> Result<(AkBlobs, EkInfo), TpmError> {
        let ek = live.ek_info()?;
        if let Some(ak) = &self.ak {
            if ak.ek_nv_index == ek.nv_index {
                return Ok((ak.clone(), ek));
            }
            tracing::warn!(
                old = ak.ek_nv_index,
                new = ek.nv_index,
                "EK certificate index changed; creating a new attestation key"
            );
        }
        let blobs = ops::create_ak(live, &ek)?;
        let file = store::ak_file(
            ek.nv_index,
            crate::unix_time::now(),
            &ops::marshall_public(&blobs.public)?,
            blobs.private.value(),
        );
        self.store.save_ak(&file)?;
        let ak = AkBlobs {
            blobs,
            ek_nv_index: ek.nv_index,
        };
        self.ak = Some(ak.clone());
        Ok((ak, ek))
    }
}

/// Parses a stored AK file.
pub(crate) fn ak_from_file(file: &AkFile) -> Result<AkBlobs, TpmError> {
    Ok(AkBlobs {
        blobs: blobs_from_hex(&file.public, &file.private)?,
        ek_nv_index: file.ek_nv_index,
    })
}

/// Decodes stored hex blobs.
pub(crate) fn blobs_from_hex(public: &str, private: &str) -> Result<Blobs, TpmError> {
    let bad = |what: &str| TpmError::Unexpected(format!("stored {what} blob is malformed"));
    let public = hex::decode(public).map_err(|_| bad("public"))?;
    let private = hex::decode(private).map_err(|_| bad("private"))?;
    Ok(Blobs {
        public: Public::unmarshall(&public).map_err(|_| bad("public"))?,
        private: Private::try_from(private).map_err(|_| bad("private"))?,
    })
}

/// Owner of the connection.
pub(crate) struct Worker {
    tcti: TctiNameConf,
    live: Option<Live>,
    persistent: Persistent,
}

impl Worker {
    pub(super) fn new(tcti: TctiNameConf, persistent: Persistent) -> Self {
        Self {
            tcti,
            live: None,
            persistent,
        }
    }

    /// Runs `op` on a live connection. Connects first if needed; if an established connection
    /// turns out to be dead, reconnects once and runs `op` again (every op is safe to repeat:
    /// a key created on a dead connection was never persisted).
    pub(super) fn run<T>(
        &mut self,
        mut op: impl FnMut(&mut Live, &mut Persistent) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let mut retried = false;
        loop {
            let fresh = self.live.is_none();
            let live = match self.live.take() {
                Some(live) => live,
                None => Live::connect(&self.tcti)?,
            };
            let live = self.live.insert(live);
            match op(live, &mut self.persistent) {
                Err(err) if err.needs_reconnect() => {
                    self.live = None;
                    if fresh || retried {
                        return Err(err);
                    }
                    tracing::warn!(error = %err, "TPM connection lost; reconnecting");
                    retried = true;
                }
                other => return other,
            }
        }
    }

    /// State that outlives connections (no TPM access).
    pub(super) fn persistent(&mut self) -> &mut Persistent {
        &mut self.persistent
    }

    /// Whether the TPM answers a command now.
    pub(super) fn ping(&mut self) -> Result<(), TpmError> {
        self.run(|live, _| {
            tpm("GetCapability", || {
                live.ctx
                    .get_capability(CapabilityType::Handles, 0x8000_0000, 1)
            })
            .map(|_| ())
        })
    }

    /// Serves jobs until shutdown or until every sender is gone.
    pub(super) fn serve(mut self, jobs: Receiver<Message>) {
        while let Ok(Message::Job(job)) = jobs.recv() {
            job(&mut self);
        }
        // Dropping `live` flushes the SRK so the TPM is left without our objects.
        self.live = None;
    }
}
