//! What the daemon tells systemd while it runs: the STATUS line, kept
//! current from model events, and watchdog pings that stop when the actors
//! stop answering.

use crate::catalog::CatalogHandle;
use crate::supervisor::SupervisorHandle;
use crate::systemd;

/// The one-line summary for systemd's STATUS (empty if the supervisor is gone).
pub(super) async fn status_line(supervisor: &SupervisorHandle) -> String {
    supervisor
        .list()
        .await
        .map(|m| systemd::status_line(&m))
        .unwrap_or_default()
}

/// Keeps systemd's STATUS line current: recomputed on every model event.
pub(super) fn spawn_status_updates(supervisor: SupervisorHandle) {
    let mut events = supervisor.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    systemd::status(&status_line(&supervisor).await);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Pings systemd's watchdog while the supervisor and catalog answer probes.
pub(super) fn spawn_watchdog(supervisor: SupervisorHandle, catalog: CatalogHandle) {
    let Some(period) = systemd::watchdog_period() else {
        return;
    };
    tracing::info!(period_ms = period.as_millis(), "systemd watchdog enabled");
    tokio::spawn(systemd::watchdog_loop(
        period,
        move || {
            let (supervisor, catalog) = (supervisor.clone(), catalog.clone());
            async move {
                supervisor
                    .ping()
                    .await
                    .map_err(|_| "supervisor".to_owned())?;
                catalog.ping().await.map_err(|_| "catalog".to_owned())
            }
        },
        systemd::watchdog_ping,
    ));
}
