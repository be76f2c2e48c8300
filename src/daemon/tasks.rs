//! The daemon's long-running tasks, joined by name: a part that fails (panics or errs) is named
//! in the error that stops the daemon.

use std::collections::HashMap;
use std::future::Future;

use anyhow::Context;
use tokio::task::{Id, JoinSet};
use tracing::error;

/// The daemon's long-running tasks, by name, so a failure says which part failed.
#[derive(Default)]
pub(super) struct Tasks {
    set: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    pub(super) fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let id = self.set.spawn(task).id();
        self.names.insert(id, name);
    }

    /// The first task to fail (panic or error); pending while none does. Tasks that finish
    /// well (the identity lookup) are collected on the way. Cancel-safe.
    pub(super) async fn failure(&mut self) -> anyhow::Error {
        loop {
            match self.set.join_next_with_id().await {
                Some(joined) => {
                    if let Err(failure) = self.outcome(joined) {
                        return failure;
                    }
                }
                None => std::future::pending().await,
            }
        }
    }

    /// Waits for every task; the first failure, if any, after logging each.
    pub(super) async fn join_all(mut self) -> anyhow::Result<()> {
        let mut first = None;
        while let Some(joined) = self.set.join_next_with_id().await {
            if let Err(failure) = self.outcome(joined) {
                error!(error = %format!("{failure:#}"), "a part of the daemon failed");
                first.get_or_insert(failure);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn outcome(
        &mut self,
        joined: Result<(Id, anyhow::Result<()>), tokio::task::JoinError>,
    ) -> anyhow::Result<()> {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(error) => (error.id(), Err(anyhow::anyhow!("panicked: {error}"))),
        };
        let name = self.names.remove(&id).unwrap_or("a task");
        result.with_context(|| format!("{name} failed"))
    }

    /// Runs `task`, which ends only when the daemon stops (a listener), as the part `name`.
    pub(super) fn spawn_unending(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.spawn(name, async move {
            task.await;
            Ok(())
        });
    }
}
