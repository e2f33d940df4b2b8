//! Client commands: `models`, `load`, `unload`, `pin`, `watch`, `status`.

use std::io::Write;
use std::path::PathBuf;

use serde_json::{Value as Json, json};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::api::auth::BearerAuth;
use crate::api::convert::state_name;
use crate::api_key::ApiKey;
use crate::proto::pb;
use crate::proto::pb::model_service_client::ModelServiceClient;
use crate::util::human_bytes;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint string is not a socket path or URL.
    #[error("bad endpoint {0:?}: use a socket path, unix:PATH or http://HOST:PORT")]
    BadEndpoint(String),
    /// Could not reach the daemon.
    #[error("cannot connect to {endpoint}: {source} (is `llama-router serve` running?)")]
    Connect {
        /// Where.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The daemon refused the request.
    #[error("{}", .0.message())]
    Rpc(#[from] Status),
    /// The API key cannot be sent.
    #[error("{0}")]
    Key(crate::api::auth::InvalidKey),
    /// The socket is not one we can trust with a request or a key.
    #[error("{0}")]
    Untrusted(#[from] crate::runtime_dir::RuntimeDirError),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl ClientError {
    /// Exit status: 2 for requests the daemon refused as invalid, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Rpc(s)
                if matches!(
                    s.code(),
                    Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition
                ) =>
            {
                2
            }
            ClientError::BadEndpoint(_) => 2,
            _ => 1,
        }
    }
}

/// Where the CLI connects when no endpoint is given: the system daemon's
/// socket if there is one, else where `serve` would put it for this user.
pub fn default_endpoint() -> String {
    let system = PathBuf::from("/run/llama-router/llama-router.sock");
    let path = if system.exists() {
        system
    } else {
        crate::config::default_socket_path()
    };
    path.display().to_string()
}

/// A channel that sends the API key with every call.
pub type Authed = tonic::service::interceptor::InterceptedService<Channel, BearerAuth>;

/// Where a client command goes, and the key it shows.
#[derive(Debug, Clone)]
pub struct Target {
    /// Socket path or URL (see [`connect`]).
    pub endpoint: String,
    /// Bearer token for a daemon started with `--api-key`.
    pub api_key: Option<ApiKey>,
}

impl Target {
    /// A channel to the daemon that carries the key.
    pub async fn channel(&self) -> Result<Authed, ClientError> {
        let auth = BearerAuth::new(self.api_key.as_ref()).map_err(ClientError::Key)?;
        Ok(Authed::new(channel(&self.endpoint).await?, auth))
    }

    /// A model-service client (see [`connect`]).
    pub async fn models(&self) -> Result<ModelServiceClient<Authed>, ClientError> {
        Ok(ModelServiceClient::new(self.channel().await?))
    }
}

/// Connects to `endpoint`: a Unix socket path (`/run/...`, `unix:/run/...`) or `http://host:port`.
pub async fn connect(endpoint: &str) -> Result<ModelServiceClient<Channel>, ClientError> {
    Ok(ModelServiceClient::new(channel(endpoint).await?))
}

/// A channel to `endpoint` (see [`connect`]).
pub async fn channel(endpoint: &str) -> Result<Channel, ClientError> {
    let connect_err = |source| ClientError::Connect {
        endpoint: endpoint.to_owned(),
        source,
    };
    let channel = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        Endpoint::from_shared(endpoint.to_owned())
            .map_err(|_| ClientError::BadEndpoint(endpoint.to_owned()))?
            .connect()
            .await
            .map_err(connect_err)?
    } else {
        let path = PathBuf::from(endpoint.strip_prefix("unix:").unwrap_or(endpoint));
        if path.as_os_str().is_empty() {
            return Err(ClientError::BadEndpoint(endpoint.to_owned()));
        }
        // Nothing (an API key above all) goes to a socket another user could have put there.
        if path.exists() {
            crate::runtime_dir::check_socket(&path)?;
        }
        crate::proto::transport::unix_channel(path)
            .await
            .map_err(connect_err)?
    };
    Ok(channel)
}

/// A model as `models --json` prints it.
pub fn model_json(m: &pb::Model) -> Json {
    let opt = |s: &str| {
        if s.is_empty() {
            Json::Null
        } else {
            Json::from(s)
        }
    };
    json!({
        "id": m.id,
        "state": state_name(m.state),
        "files": m.files,
        "size_bytes": m.size_bytes,
        "name": opt(&m.name),
        "architecture": opt(&m.architecture),
        "quantization": opt(&m.quantization),
        "parameter_count": m.parameter_count,
        "context_length": m.context_length,
        "failure_reason": opt(&m.failure_reason),
        "last_used_unix_ms": if m.last_used_unix_ms == 0 { Json::Null } else { m.last_used_unix_ms.into() },
        "pinned": m.pinned,
        "projector": opt(&m.projector),
        "resident_bytes": m.resident_bytes,
        "worker_pid": if m.worker_pid == 0 { Json::Null } else { m.worker_pid.into() },
        "aliases": m.aliases,
        "settings": m.settings.as_ref().map(|s| json!({
            "ctx_size": s.ctx_size,
            "parallel": s.parallel,
            "threads": s.threads,
            "batch_size": s.batch_size,
            "gpu_layers": match crate::params::GpuLayers::from_proto(s.gpu_layers) {
                crate::params::GpuLayers::Count(n) => n.into(),
                other => Json::from(other.to_string()),
            },
            "flash_attn": s.flash_attn,
            "cache_type_k": s.cache_type_k,
            "cache_type_v": s.cache_type_v,
            "cache_prompt": s.cache_prompt,
            "mlock": s.mlock,
            "idle_ttl_seconds": s.idle_ttl_seconds,
            "env": s.env,
            "chat_template": opt(&s.chat_template),
        })),
        "gpu": m.gpu.as_ref().map(|g| json!({
            "device": g.device,
            "layers": g.layers,
            "max_layers": g.max_layers,
            "estimate_bytes": g.estimate_bytes,
            "measured_bytes": if g.measured_bytes == 0 { Json::Null } else { g.measured_bytes.into() },
            "reserved_bytes": g.reserved_bytes,
            "upload_seconds": g.upload_seconds,
            "upload_bytes_per_second": g.upload_bytes_per_second,
        })),
        "note": opt(&m.note),
    })
}

/// Writes `text` to `out`; a closed pipe (`| head`) is no error.
pub fn print(out: &mut impl Write, text: &str) -> Result<(), ClientError> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `models [--json]`.
pub async fn models(target: &Target, as_json: bool) -> Result<(), ClientError> {
    let mut client = target.models().await?;
    let models = client
        .list_models(pb::ListModelsRequest {})
        .await?
        .into_inner()
        .models;
    let mut out = std::io::stdout().lock();
    if as_json {
        let list: Vec<Json> = models.iter().map(model_json).collect();
        return print(&mut out, &format!("{}\n", Json::Array(list)));
    }
    let mut text = format!(
        "{:<32} {:<10} {:>10} {:<12} {:<8} {:>12} {:>8}\n",
        "ID", "STATE", "SIZE", "ARCH", "QUANT", "PARAMS", "CONTEXT"
    );
    for m in &models {
        let pin = if m.pinned { " (pinned)" } else { "" };
        text.push_str(&format!(
            "{:<32} {:<10} {:>10} {:<12} {:<8} {:>12} {:>8}{pin}\n",
            m.id,
            state_name(m.state),
            human_bytes(m.size_bytes),
            m.architecture,
            m.quantization,
            m.parameter_count,
            m.context_length
        ));
        if !m.aliases.is_empty() {
            text.push_str(&format!("    aliases: {}\n", m.aliases.join(", ")));
        }
        if let Some(s) = &m.settings {
            let worker = if m.worker_pid > 0 {
                format!("worker pid {}, ", m.worker_pid)
            } else {
                String::new()
            };
            let env = if s.env.is_empty() {
                String::new()
            } else {
                format!(", env {}", s.env.join(" "))
            };
            let reuse = if s.cache_prompt {
                ""
            } else {
                ", no prompt cache"
            };
            text.push_str(&format!(
                "    {worker}ctx {} x {}, batch {}, flash-attn {}, kv {}/{}{reuse}{env}\n",
                s.ctx_size, s.parallel, s.batch_size, s.flash_attn, s.cache_type_k, s.cache_type_v
            ));
        }
        if !m.failure_reason.is_empty() {
            text.push_str(&format!("    {}\n", m.failure_reason));
        }
    }
    print(&mut out, &text)
}

/// `unload NAME`.
pub async fn unload(target: &Target, id: &str) -> Result<(), ClientError> {
    let mut client = target.models().await?;
    let m = client
        .unload_model(pb::UnloadModelRequest { id: id.to_owned() })
        .await?
        .into_inner();
    print(
        &mut std::io::stdout().lock(),
        &format!("{}: {}\n", m.id, state_name(m.state)),
    )
}

/// `pin NAME [--off]`.
pub async fn pin(target: &Target, id: &str, pinned: bool) -> Result<(), ClientError> {
    let mut client = target.models().await?;
    let m = client
        .pin_model(pb::PinModelRequest {
            id: id.to_owned(),
            pinned,
        })
        .await?
        .into_inner();
    let what = if m.pinned { "pinned" } else { "unpinned" };
    print(
        &mut std::io::stdout().lock(),
        &format!("{}: {what}\n", m.id),
    )
}

/// `watch [--json]`: one line per state change until interrupted.
pub async fn watch(target: &Target, as_json: bool) -> Result<(), ClientError> {
    let mut client = target.models().await?;
    let mut events = client
        .watch_events(pb::WatchEventsRequest {})
        .await?
        .into_inner();
    while let Some(e) = events.next().await {
        let e = e?;
        let line = if as_json {
            json!({
                "id": e.id,
                "state": state_name(e.state),
                "previous": state_name(e.previous),
                "reason": if e.reason.is_empty() { Json::Null } else { e.reason.clone().into() },
                "at_unix_ms": e.at_unix_ms,
            })
            .to_string()
        } else {
            let reason = if e.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.reason)
            };
            format!(
                "{} {} -> {}{reason}",
                e.id,
                state_name(e.previous),
                state_name(e.state)
            )
        };
        print(&mut std::io::stdout().lock(), &format!("{line}\n"))?;
    }
    Ok(())
}

/// `status [--json]`.
pub async fn status(target: &Target, as_json: bool) -> Result<(), ClientError> {
    let mut client = target.models().await?;
    let s = client
        .get_status(pb::GetStatusRequest {})
        .await?
        .into_inner();
    let mut by_state: Vec<(&String, &u32)> = s.models_by_state.iter().collect();
    by_state.sort();
    let text = if as_json {
        json!({
            "version": s.version,
            "uptime_seconds": s.uptime_seconds,
            "models_dir": s.models_dir,
            "models_max": s.models_max,
            "host_cache_bytes_used": s.host_cache_bytes_used,
            "host_cache_bytes_limit": s.host_cache_bytes_limit,
            "models_by_state": s.models_by_state,
            "gpus": s.gpus.iter().map(|g| json!({
                "backend": g.backend,
                "index": g.index,
                "name": g.name,
                "arch": if g.arch.is_empty() { Json::Null } else { g.arch.clone().into() },
                "arch_override": if g.arch_override.is_empty() { Json::Null } else { g.arch_override.clone().into() },
                "kind": g.kind,
                "ggml_name": if g.ggml_name.is_empty() { Json::Null } else { g.ggml_name.clone().into() },
                "budget_bytes": if g.budget_bytes == 0 { Json::Null } else { g.budget_bytes.into() },
                "total_bytes": g.total_bytes,
                "free_bytes": g.free_bytes,
                "usable": g.usable,
                "reserved_by_model": g.reserved_by_model,
            })).collect::<Vec<_>>(),
            "gpu_notes": s.gpu_notes,
        })
        .to_string()
            + "\n"
    } else {
        let limit = if s.host_cache_bytes_limit == 0 {
            "no limit".to_owned()
        } else {
            human_bytes(s.host_cache_bytes_limit)
        };
        let states: Vec<String> = by_state.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let gpus = if !s.gpus.iter().any(|g| g.usable) {
            format!("no usable GPU ({})", s.gpu_notes.join("; "))
        } else {
            s.gpus
                .iter()
                .map(|g| {
                    let arch = if g.arch.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", g.arch)
                    };
                    let budget = if g.budget_bytes == 0 {
                        String::new()
                    } else {
                        format!(" (budget {})", human_bytes(g.budget_bytes))
                    };
                    format!(
                        "{}:{} {} ({}{arch}): {} free of {}{budget}{}",
                        g.backend,
                        g.index,
                        g.name,
                        g.kind,
                        human_bytes(g.free_bytes),
                        human_bytes(g.total_bytes),
                        match (g.usable, g.backend.as_str()) {
                            (true, _) => "",
                            (false, "cpu") => " (the host)",
                            (false, _) => " (llama.cpp in this build does not offload to it)",
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n             ")
        };
        format!(
            "version:     {}\nuptime:      {} s\nmodels dir:  {}\nmodels max:  {}\nhost cache:  {} of {limit}\nmodels:      {}\ngpus:        {gpus}\n",
            s.version,
            s.uptime_seconds,
            s.models_dir,
            if s.models_max == 0 {
                "no limit".to_owned()
            } else {
                s.models_max.to_string()
            },
            human_bytes(s.host_cache_bytes_used),
            states.join(", ")
        )
    };
    print(&mut std::io::stdout().lock(), &text)
}
