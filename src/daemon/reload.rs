//! SIGHUP: re-read the configuration, apply what can change while running,
//! rescan the models directory.

use super::settings::{check_aliases, restart_only_changes, supervisor_settings};
use crate::config::Config;
use crate::supervisor::SupervisorHandle;
use crate::systemd;
use crate::telemetry::{self, LogLevelHandle};

use super::ConfigReload;
use super::notify::status_line;

/// SIGHUP: RELOADING=1, re-read the config (a bad one keeps the old), apply
/// the limits, rescan the directory, READY=1. Running models that still fit stay.
pub(super) async fn reload(
    config: &mut Config,
    reread: &ConfigReload,
    supervisor: &SupervisorHandle,
    log: &LogLevelHandle,
) {
    systemd::reloading();
    let ids: Vec<String> = supervisor
        .list()
        .await
        .map(|ms| ms.into_iter().map(|m| m.id).collect())
        .unwrap_or_default();
    let reread = reread().and_then(|new| {
        check_aliases(&new, ids.iter().map(String::as_str))?;
        Ok(new)
    });
    match reread {
        Ok(new) => {
            let restart = restart_only_changes(config, &new);
            if !restart.is_empty() {
                tracing::warn!(keys = %restart.join(", "), "SIGHUP: these settings change only on restart");
            }
            if supervisor_settings(&new) != supervisor_settings(config) {
                if let Err(e) = supervisor.apply_settings(supervisor_settings(&new)).await {
                    tracing::error!(error = %e, "SIGHUP: cannot apply the new limits");
                }
                tracing::info!(
                    models_max = new.models_max,
                    idle_ttl = new.idle_ttl,
                    "SIGHUP: new limits applied"
                );
            }
            if new.log_level != config.log_level {
                let level = telemetry::effective_level(new.log_level.as_deref());
                match log.set(&level) {
                    Ok(()) => tracing::info!(level = %level, "SIGHUP: log level changed"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: keeping the previous log level"),
                }
            }
            *config = new;
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the configuration does not load; keeping the previous one")
        }
    }
    match supervisor.rescan().await {
        Ok(s) => tracing::info!(
            models = s.models,
            added = s.added,
            removed = s.removed,
            changed = s.changed,
            "SIGHUP: rescanned the models directory"
        ),
        Err(e) => tracing::error!(error = %e, "SIGHUP: rescan failed"),
    }
    systemd::ready(&status_line(supervisor).await);
}
