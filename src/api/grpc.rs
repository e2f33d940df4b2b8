//! `llama_router.v1.ModelService` over the supervisor, plus health and reflection.

use std::pin::Pin;
use std::time::Instant;

use tokio::sync::{broadcast, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{convert, crashes};
use crate::crashes::CrashStore;
use crate::gpu::devices::GpuSet;
use crate::proto::pb::{self, model_service_server::ModelService};
use crate::supervisor::{LoadStatus, SupervisorHandle};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The control-plane service.
#[derive(Clone)]
pub struct ModelServiceImpl {
    supervisor: SupervisorHandle,
    started: Instant,
    models_dir: String,
    /// Turns true when the daemon starts draining: long-lived streams end then.
    stopping: watch::Receiver<bool>,
    gpus: GpuSet,
    /// Where crash reports are (none: not kept).
    crashes: Option<CrashStore>,
}

impl ModelServiceImpl {
    /// A service answering from `supervisor`; its event streams end when `stopping` turns true.
    pub fn new(
        supervisor: SupervisorHandle,
        models_dir: String,
        stopping: watch::Receiver<bool>,
        gpus: GpuSet,
        crashes: Option<CrashStore>,
    ) -> Self {
        ModelServiceImpl {
            supervisor,
            started: Instant::now(),
            models_dir,
            stopping,
            gpus,
            crashes,
        }
    }
}

/// Resolves once `stopping` turns true (or its sender is gone).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

fn require_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("model id is empty"));
    }
    Ok(id)
}

#[tonic::async_trait]
impl ModelService for ModelServiceImpl {
    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self.supervisor.list().await.map_err(convert::status)?;
        Ok(Response::new(pb::ListModelsResponse {
            models: models.iter().map(convert::model).collect(),
        }))
    }

    async fn get_model(
        &self,
        req: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let id = require_id(&req.get_ref().id)?;
        let view = self.supervisor.get(id).await.map_err(convert::status)?;
        Ok(Response::new(convert::model(&view)))
    }

    type LoadModelStream = ResponseStream<pb::LoadProgress>;

    async fn load_model(
        &self,
        req: Request<pb::LoadModelRequest>,
    ) -> Result<Response<Self::LoadModelStream>, Status> {
        let id = require_id(&req.get_ref().id)?;
        if req.get_ref().dry_run {
            let plan = crate::supervisor::dry_run::dry_run(&self.supervisor, &self.gpus, id)
                .await
                .map_err(convert::status)?;
            let message = pb::LoadProgress {
                plan: Some(convert::plan(&plan)),
                ..Default::default()
            };
            let stream = async_stream(move |tx| async move {
                let _ = tx.send(Ok(message)).await;
            });
            return Ok(Response::new(stream));
        }
        let start_worker = req.get_ref().start_worker;
        let supervisor = self.supervisor.clone();
        let id = id.to_owned();
        let mut status = self.supervisor.load(&id).await.map_err(convert::status)?;
        let stream = async_stream(move |tx| async move {
            loop {
                let current = status.borrow_and_update().clone();
                let (message, last) = match current {
                    LoadStatus::Queued => (
                        Ok(pb::LoadProgress {
                            phase: pb::load_progress::Phase::Queued.into(),
                            ..Default::default()
                        }),
                        false,
                    ),
                    LoadStatus::Loading(p) => (Ok(convert::progress(&p)), false),
                    LoadStatus::Ready(view) if start_worker => {
                        let starting = pb::LoadProgress {
                            phase: pb::load_progress::Phase::StartingWorker.into(),
                            bytes_done: 0,
                            bytes_total: view.size_bytes,
                            model: None,
                            plan: None,
                        };
                        if tx.send(Ok(starting)).await.is_err() {
                            return;
                        }
                        (started(&supervisor, &id).await, true)
                    }
                    LoadStatus::Ready(view) => (Ok(ready(&view)), true),
                    LoadStatus::Failed(e) => (Err(convert::status(e)), true),
                };
                if tx.send(message).await.is_err() || last {
                    return;
                }
                if status.changed().await.is_err() {
                    let _ = tx
                        .send(Err(Status::unavailable("the load was abandoned")))
                        .await;
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn unload_model(
        &self,
        req: Request<pb::UnloadModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let id = require_id(&req.get_ref().id)?;
        let view = self.supervisor.unload(id).await.map_err(convert::status)?;
        Ok(Response::new(convert::model(&view)))
    }

    async fn pin_model(
        &self,
        req: Request<pb::PinModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let r = req.get_ref();
        let id = require_id(&r.id)?;
        let view = self
            .supervisor
            .pin(id, r.pinned)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::model(&view)))
    }

    type WatchEventsStream = ResponseStream<pb::ModelEvent>;

    async fn watch_events(
        &self,
        _: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let mut events = self.supervisor.events();
        let stopping = self.stopping.clone();
        Ok(Response::new(async_stream(move |tx| async move {
            let stop = stopped(stopping);
            tokio::pin!(stop);
            loop {
                let message = tokio::select! {
                    () = &mut stop => return,
                    event = events.recv() => match event {
                        Ok(e) => Ok(convert::event(&e)),
                        Err(broadcast::error::RecvError::Lagged(n)) => Err(Status::data_loss(format!(
                            "watcher fell behind and missed {n} events; list models and watch again"
                        ))),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                let failed = message.is_err();
                if tx.send(message).await.is_err() || failed {
                    return;
                }
            }
        })))
    }

    async fn rescan(
        &self,
        _: Request<pb::RescanRequest>,
    ) -> Result<Response<pb::RescanResponse>, Status> {
        let s = self.supervisor.rescan().await.map_err(convert::status)?;
        Ok(Response::new(pb::RescanResponse {
            models: s.models,
            added: s.added,
            removed: s.removed,
            changed: s.changed,
        }))
    }

    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.supervisor.status().await.map_err(convert::status)?;
        Ok(Response::new(pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            models_max: s.models_max,
            host_cache_bytes_used: s.host_cache_used,
            host_cache_bytes_limit: s.host_cache_limit,
            models_by_state: s
                .by_state
                .iter()
                .map(|(st, n)| (st.name().to_owned(), *n))
                .collect(),
            models_dir: self.models_dir.clone(),
            gpus: convert::gpus(&self.gpus),
            gpu_notes: self.gpus.notes().to_vec(),
        }))
    }

    async fn list_crashes(
        &self,
        _: Request<pb::ListCrashesRequest>,
    ) -> Result<Response<pb::ListCrashesResponse>, Status> {
        let store = crashes::store(self.crashes.as_ref())?.clone();
        let dir = store.dir().display().to_string();
        let reports = store
            .off_thread(CrashStore::list)
            .await
            .map_err(crashes::status)?;
        Ok(Response::new(pb::ListCrashesResponse {
            crashes: reports.iter().map(crashes::summary).collect(),
            dir,
        }))
    }

    async fn get_crash(
        &self,
        request: Request<pb::GetCrashRequest>,
    ) -> Result<Response<pb::CrashReport>, Status> {
        let store = crashes::store(self.crashes.as_ref())?.clone();
        let id = request.into_inner().id;
        let report = store
            .off_thread(move |s| s.get(&id))
            .await
            .map_err(crashes::status)?;
        Ok(Response::new(crashes::report(&report)?))
    }
}

/// A response stream fed by a task through a small channel (backpressure to the client).
fn async_stream<T, F, Fut>(body: F) -> ResponseStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Starts `id`'s worker as a request would (a lease, given back at once)
/// and answers with the model, its GPU use and upload figures included.
async fn started(
    supervisor: &crate::supervisor::SupervisorHandle,
    id: &str,
) -> Result<pb::LoadProgress, Status> {
    let lease = supervisor.acquire(id).await.map_err(convert::status)?;
    drop(lease);
    let view = supervisor.get(id).await.map_err(convert::status)?;
    Ok(ready(&view))
}

/// The last message of a load: the model, ready.
fn ready(view: &crate::supervisor::ModelView) -> pb::LoadProgress {
    pb::LoadProgress {
        phase: pb::load_progress::Phase::Ready.into(),
        bytes_done: view.resident_bytes,
        bytes_total: view.size_bytes,
        model: Some(convert::model(view)),
        plan: None,
    }
}
