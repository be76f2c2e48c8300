//! Signals: SIGTERM (systemd) or SIGINT (a terminal) cancels one token that every part of the
//! daemon watches; SIGHUP asks for a reload. What each part does then (drain, stop refreshing,
//! re-read the configuration) is its own business; this module only turns signals into the
//! cancellation and the reload requests.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
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

/// One message per SIGHUP. Signals that arrive while a reload is pending are merged into it:
/// one more reload reads the newest file anyway.
pub fn reload_on_hangup() -> std::io::Result<mpsc::Receiver<()>> {
    let mut hangups = signal(SignalKind::hangup())?;
    let (sender, receiver) = mpsc::channel(1);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if sender.try_send(()).is_err() && sender.is_closed() {
                return;
            }
        }
    });
    Ok(receiver)
}
