//! The model actor: one per loaded model. Runs the loader, holds the resident
//! model, releases it on unload, and reports every step to the supervisor.
//! (The worker process of the inference engine plugs in here.)

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::loader::{self, LoadError, LoadOptions, Progress};

/// What a model actor reports.
#[derive(Debug)]
pub enum ModelReport {
    /// Load progress.
    Progress(Progress),
    /// Resident; holds this many bytes.
    Ready { bytes: u64 },
    /// The load failed.
    Failed(LoadError),
    /// Released (after ready, a failure or a cancelled load); the actor has ended.
    Unloaded,
}

/// A report tagged with the model and the load it belongs to.
#[derive(Debug)]
pub struct Tagged {
    /// Model id.
    pub id: String,
    /// Which load (stale reports of an earlier load are ignored).
    pub generation: u64,
    /// The report.
    pub report: ModelReport,
}

/// Controls one model actor.
#[derive(Debug)]
pub struct ModelHandle {
    cancel: Arc<AtomicBool>,
    unload: Option<oneshot::Sender<()>>,
}

impl ModelHandle {
    /// Starts loading `files`; reports arrive on `reports`.
    pub fn spawn(
        id: String,
        generation: u64,
        files: Vec<PathBuf>,
        options: LoadOptions,
        reports: mpsc::UnboundedSender<Tagged>,
    ) -> Self {
        let cancel = Arc::new(AtomicBool::new(false));
        let (unload, unload_rx) = oneshot::channel();
        tokio::spawn(run(
            id,
            generation,
            files,
            options,
            reports,
            cancel.clone(),
            unload_rx,
        ));
        ModelHandle {
            cancel,
            unload: Some(unload),
        }
    }

    /// Cancels a load in progress, or releases the resident model.
    pub fn unload(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(tx) = self.unload.take() {
            let _ = tx.send(());
        }
    }
}

async fn run(
    id: String,
    generation: u64,
    files: Vec<PathBuf>,
    options: LoadOptions,
    reports: mpsc::UnboundedSender<Tagged>,
    cancel: Arc<AtomicBool>,
    unload: oneshot::Receiver<()>,
) {
    let send = {
        let (id, reports) = (id.clone(), reports.clone());
        move |report| {
            let _ = reports.send(Tagged {
                id: id.clone(),
                generation,
                report,
            });
        }
    };
    let progress_send = send.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        loader::load(&files, options, &cancel, &|p| {
            progress_send(ModelReport::Progress(p))
        })
    })
    .await;
    let resident = match loaded {
        Ok(Ok(resident)) => resident,
        Ok(Err(e)) => {
            send(ModelReport::Failed(e));
            send(ModelReport::Unloaded);
            return;
        }
        Err(join) => {
            tracing::error!(model = %id, error = %join, "loader panicked");
            send(ModelReport::Failed(LoadError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(format!("loader panicked: {join}")),
            }));
            send(ModelReport::Unloaded);
            return;
        }
    };
    send(ModelReport::Ready {
        bytes: resident.bytes(),
    });
    // Hold the model until told to let go (or the supervisor is gone).
    let _ = unload.await;
    // munmap of a large model can take a while: off the async threads.
    let _ = tokio::task::spawn_blocking(move || drop(resident)).await;
    send(ModelReport::Unloaded);
}
