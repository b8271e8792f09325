//! PostgreSQL connections owned by worker threads, serving registry calls over a bounded channel.
//!
//! The registry trait is synchronous and is called from inside tokio tasks, where the blocking
//! `postgres` client must not run (it drives its own runtime and panics inside another). So each
//! connection lives on a plain thread of its own; a call sends its work to the pool and waits
//! for the answer for at most [`REQUEST_TIMEOUT`]. A worker whose connection failed drops it and
//! connects again for its next call: a restarted PostgreSQL is used again without a restart of
//! the verifier. The queue is bounded; a full queue is an error, not a wait.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::{Client, Config, NoTls, Statement};

use crate::registry::RegistryError;

/// How long a caller waits for its answer (connecting included).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Calls waiting for a worker, at most.
const QUEUE_BOUND: usize = 1024;

/// One worker's connection and the statements it prepared.
pub(crate) struct Session {
    pub(crate) client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Session {
    /// `sql`, prepared once per connection.
    pub(crate) fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// A worker's connection, made on first use and again after it failed.
pub(crate) struct Slot {
    config: Config,
    session: Option<Session>,
    /// Whether the session was used before the current call (so may have died meanwhile).
    reused: bool,
}

impl Slot {
    fn session(&mut self) -> Result<&mut Session, postgres::Error> {
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            self.session = None;
        }
        self.reused = self.session.is_some();
        let session = match self.session.take() {
            Some(session) => session,
            None => Session {
                client: connect(&self.config)?,
                statements: HashMap::new(),
            },
        };
        Ok(self.session.insert(session))
    }

    /// Runs `work` on the session; once more on a new connection when the reused one turned out
    /// closed before the call reached the server (the database restarted while it sat idle).
    fn call<R>(
        &mut self,
        work: &impl Fn(&mut Session) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        let mut result = self.session().map_err(unavailable).and_then(work);
        if self.reused && result.as_ref().err().is_some_and(is_closed) {
            self.session = None;
            result = self.session().map_err(unavailable).and_then(work);
        }
        if matches!(result, Err(RegistryError::Unavailable(_))) {
            self.session = None;
        }
        result
    }
}

/// Whether `error` says the connection was already gone before the call: closed, or ended by
/// the server while it sat idle (a FATAL message such as 57P01 `admin_shutdown` waiting to be
/// read). Nothing of the call reached a server that could act on it, so it may be retried.
fn is_closed(error: &RegistryError) -> bool {
    let RegistryError::Unavailable(cause) = error else {
        return false;
    };
    let Some(error) = cause.downcast_ref::<postgres::Error>() else {
        return false;
    };
    error.is_closed()
        || error
            .as_db_error()
            .is_some_and(|db| db.parsed_severity() == Some(postgres::error::Severity::Fatal))
}

/// Work for a worker.
type Job = Box<dyn FnOnce(&mut Slot) + Send>;

/// Worker threads, each owning one connection.
pub(crate) struct Pool {
    jobs: SyncSender<Job>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// Opens one connection (also used by the listener and for migrations).
pub(crate) fn connect(config: &Config) -> Result<Client, postgres::Error> {
    config.connect(NoTls)
}

fn unavailable(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> RegistryError {
    RegistryError::Unavailable(error.into())
}

impl Pool {
    /// Starts `workers` threads connecting with `config` (lazily, on their first call).
    pub(crate) fn start(config: &Config, workers: usize) -> Result<Self, RegistryError> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE_BOUND);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..workers.max(1) {
            let config = config.clone();
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("hwsign-pg-{index}"))
                .spawn(move || work(&config, &queue))
                .map_err(unavailable)?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on a worker's connection and returns its answer. A failure that is not the
    /// database's answer to the statement (connection lost, timeout) drops the connection.
    pub(crate) fn run<R: Send + 'static>(
        &self,
        work: impl Fn(&mut Session) -> Result<R, RegistryError> + Send + 'static,
    ) -> Result<R, RegistryError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |slot| {
            // The caller may have given up; nothing to do then.
            let _ = reply.send(slot.call(&work));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(unavailable(format!(
                    "{QUEUE_BOUND} registry calls already waiting for PostgreSQL"
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(unavailable("the PostgreSQL workers stopped"));
            }
        }
        match answer.recv_timeout(REQUEST_TIMEOUT) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(unavailable(format!(
                "PostgreSQL did not answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(unavailable("a PostgreSQL worker stopped")),
        }
    }
}

/// A worker: takes calls until the pool is dropped.
fn work(config: &Config, queue: &Mutex<Receiver<Job>>) {
    let mut slot = Slot {
        config: config.clone(),
        session: None,
        reused: false,
    };
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        job(&mut slot);
    }
}
