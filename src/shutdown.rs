//! Stopping: SIGTERM (systemd) or SIGINT (a terminal) cancels one token that every part of the
//! daemon watches. What each part does on cancellation (drain, stop refreshing) is its own
//! business; this module only turns signals into the cancellation.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub fn cancel_on_signal(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        info!(signal = name, "stopping");
        shutdown.cancel();
    });
    Ok(())
}
