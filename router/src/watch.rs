//! Hot reload of the catalog file.
//!
//! The file is polled (every `catalog_poll_ms`) rather than watched with
//! inotify: polling a small file is cheap, works the same on every file
//! system (including editors that replace the file and config maps that
//! swap symlinks), and needs no extra dependency. A change takes effect
//! only if the new file parses, validates and still names this router's
//! region; otherwise the refusal is logged once and reported by the admin
//! status, and the last good catalog keeps serving.

use std::sync::Arc;

use crate::catalog::{Catalog, Reload};
use crate::config::ms;
use crate::state::RouterState;

/// Re-reads the catalog file now (the embedded default never changes).
pub fn reload_now(state: &RouterState) -> Result<Reload, String> {
    let Some(path) = &state.config.catalog else {
        let version = state.catalog.current().version().into();
        return Ok(Reload::Unchanged { version });
    };
    let result = std::fs::read(path)
        .map_err(|e| format!("cannot read catalog {}: {e}", path.display()))
        .and_then(|bytes| {
            let candidate =
                Catalog::parse(&bytes).map_err(|e| format!("catalog {}: {e}", path.display()))?;
            if candidate.region(&state.region).is_none() {
                return Err(format!(
                    "catalog {} no longer names this router's region {:?}",
                    path.display(),
                    state.region
                ));
            }
            state
                .catalog
                .reload(&bytes)
                .map_err(|e| format!("catalog {}: {e}", path.display()))
        });
    match &result {
        Ok(Reload::Replaced { previous, current }) => {
            tracing::info!(%previous, %current, "catalog reloaded");
            metrics::counter!("router_catalog_reloads_total", "result" => "replaced").increment(1);
            state.catalog_error.store(Arc::new(String::new()));
            state.catalog_changed();
        }
        Ok(Reload::Unchanged { .. }) => {
            state.catalog_error.store(Arc::new(String::new()));
        }
        Err(error) => {
            if **state.catalog_error.load() != *error {
                tracing::error!(%error, "catalog refused; the previous catalog stays in force");
                metrics::counter!("router_catalog_reloads_total", "result" => "refused")
                    .increment(1);
            }
            state.catalog_error.store(Arc::new(error.clone()));
        }
    }
    result
}

/// Polls the catalog file until the process ends.
pub async fn watch_catalog(state: Arc<RouterState>) {
    if state.config.catalog.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(ms(state.config.catalog_poll_ms.max(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = state.clone();
        // File I/O and parsing (a large catalog) stay off the reactor.
        let _ = tokio::task::spawn_blocking(move || reload_now(&state)).await;
    }
}
