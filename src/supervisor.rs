//! The set of served roles: one refresher task per role (a role served per user: the task that
//! runs its users' sessions), and the table handlers read.
//!
//! At start the supervisor runs a refresher for every configured role; on reload it compares
//! the new role list with the running one ([`plan`], pure): roles whose STS settings are unchanged
//! keep their task and their credentials (no STS call) and take the new access settings (token,
//! allowed users), new roles get a task, removed roles stop being served, and a role whose STS
//! settings changed is replaced. The table of roles is published through a `watch`
//! channel of `Arc<RoleTable>`, so a request reads one consistent snapshot and never waits on a
//! reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{RoleConfig, Subject};
use crate::refresh::{Refresher, Seams};
use crate::roles::{RoleEntry, RoleTable, Sessions};
use crate::sessions;
use crate::sts::Sts;
use crate::token::RoleTokens;

/// What a reload changes, by role name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Same STS settings: the running refresher and its credentials stay.
    pub kept: Vec<String>,
    /// New names: a refresher starts.
    pub started: Vec<String>,
    /// Same name, other settings: the old refresher stops, a new one starts.
    pub changed: Vec<String>,
    /// Names no longer configured: no longer served.
    pub stopped: Vec<String>,
}

/// Compares the running roles with the wanted ones.
pub fn plan<'a>(
    running: impl IntoIterator<Item = &'a RoleConfig>,
    wanted: &[RoleConfig],
) -> ReloadPlan {
    let running: BTreeMap<&str, &RoleConfig> =
        running.into_iter().map(|r| (r.name.as_str(), r)).collect();
    let mut plan = ReloadPlan::default();
    for role in wanted {
        let bucket = match running.get(role.name.as_str()) {
            Some(current) if current.same_session(role) => &mut plan.kept,
            Some(_) => &mut plan.changed,
            None => &mut plan.started,
        };
        bucket.push(role.name.clone());
    }
    let wanted_names: Vec<&str> = wanted.iter().map(|r| r.name.as_str()).collect();
    plan.stopped = running
        .keys()
        .filter(|name| !wanted_names.contains(name))
        .map(|name| name.to_string())
        .collect();
    plan
}

struct Running {
    entry: RoleEntry,
    stop: CancellationToken,
}

/// Owns the refresher tasks; the one writer of the role table.
pub struct Supervisor<S> {
    seams: Seams<S>,
    /// This instance's id, for templates that name it.
    instance_id: Option<String>,
    running: BTreeMap<String, Running>,
    table: watch::Sender<Arc<RoleTable>>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl<S: Sts> Supervisor<S> {
    /// Starts a refresher for each of `roles` (the sessions of a role served per user start
    /// with their users' first requests); they all stop when `shutdown` is cancelled.
    pub fn start(
        roles: &[RoleConfig],
        tokens: &RoleTokens,
        seams: Seams<S>,
        instance_id: Option<String>,
        shutdown: CancellationToken,
    ) -> (Self, watch::Receiver<Arc<RoleTable>>) {
        let (table, receiver) = watch::channel(Arc::new(RoleTable::new()));
        let mut supervisor = Self {
            seams,
            instance_id,
            running: BTreeMap::new(),
            table,
            shutdown,
            tasks: JoinSet::new(),
        };
        supervisor.apply(roles, tokens);
        (supervisor, receiver)
    }

    /// Brings the running roles in line with `roles` (granted by `tokens` where they have their
    /// own) and publishes the new table.
    pub fn apply(&mut self, roles: &[RoleConfig], tokens: &RoleTokens) -> ReloadPlan {
        let plan = plan(self.running.values().map(|r| &r.entry.config), roles);
        for name in plan.stopped.iter().chain(&plan.changed) {
            if let Some(running) = self.running.remove(name) {
                running.stop.cancel();
            }
        }
        let to_start = plan.started.iter().chain(&plan.changed);
        for role in roles
            .iter()
            .filter(|r| to_start.clone().any(|n| *n == r.name))
        {
            self.spawn(role.clone());
        }
        for role in roles {
            if let Some(running) = self.running.get_mut(&role.name) {
                running.entry.config = role.clone();
                running.entry.token = tokens.get(&role.name).cloned();
            }
        }
        let table = self
            .running
            .iter()
            .map(|(name, running)| (name.clone(), running.entry.clone()))
            .collect();
        self.table.send_replace(Arc::new(table));
        plan
    }

    fn spawn(&mut self, role: RoleConfig) {
        let stop = self.shutdown.child_token();
        let sessions = if role.per_user() {
            let instance_id = self.instance_id.clone();
            let (sessions, running) =
                sessions::start(role.clone(), instance_id, self.seams.clone(), stop.clone());
            self.tasks.spawn(running);
            Sessions::PerUser(sessions)
        } else {
            let subject = Subject {
                user: None,
                instance_id: self.instance_id.clone(),
            };
            let (refresher, status) =
                Refresher::new(Arc::new(role.clone()), &subject, self.seams.clone());
            self.tasks.spawn(refresher.run(stop.clone()));
            Sessions::Shared(status)
        };
        let entry = RoleEntry {
            config: role.clone(),
            token: None,
            sessions,
        };
        self.running.insert(role.name, Running { entry, stop });
    }

    /// Waits until a refresher fails (panics): a role would silently stop being refreshed.
    /// Refreshers stopped by a reload are collected on the way. Cancel-safe: it can lose a
    /// `select!` and be called again.
    pub async fn failure(&mut self) -> anyhow::Error {
        loop {
            match self.tasks.join_next().await {
                Some(Err(error)) if error.is_panic() => {
                    return anyhow::anyhow!("a refresher panicked: {error}");
                }
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    }

    /// Stops every refresher and waits for them; fails if one of them had panicked.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut panicked = 0;
        while let Some(joined) = self.tasks.join_next().await {
            panicked += usize::from(joined.is_err_and(|error| error.is_panic()));
        }
        match panicked {
            0 => Ok(()),
            n => Err(anyhow::anyhow!("{n} refresher(s) panicked")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoleArn;
    use crate::token::AuthToken;
    use std::time::Duration;

    /// [`crate::fake::role`] in another account: a changed ARN means a changed role.
    fn role(name: &str, account: &str) -> RoleConfig {
        RoleConfig {
            arn: RoleArn::parse(&format!("arn:aws:iam::{account}:role/{name}")).unwrap(),
            ..crate::fake::role(name)
        }
    }

    #[test]
    fn reload_plan_sorts_roles() {
        let running = [
            role("a", "111111111111"),
            role("b", "222222222222"),
            role("c", "333333333333"),
        ];
        let wanted = [
            role("a", "111111111111"),
            role("b", "999999999999"),
            role("d", "444444444444"),
        ];
        let plan = plan(&running, &wanted);
        assert_eq!(plan.kept, ["a"]);
        assert_eq!(plan.changed, ["b"]);
        assert_eq!(plan.started, ["d"]);
        assert_eq!(plan.stopped, ["c"]);
    }

    /// A reload that adds a role fetches only that role; the unchanged one keeps its set
    /// without another STS call; a removed role leaves the table.
    #[tokio::test(start_paused = true)]
    async fn reload_fetches_only_what_changed() {
        use crate::fake::{FakeClock, FakeSts};
        let clock = FakeClock::new();
        let sts = FakeSts::new(clock.clone(), vec![]);
        let shutdown = CancellationToken::new();
        let piyo = crate::fake::role("piyo");
        let seams = Seams {
            sts: sts.clone(),
            clock,
            metrics: Arc::new(crate::metrics::Metrics::new()),
        };
        let (mut supervisor, table) = Supervisor::start(
            std::slice::from_ref(&piyo),
            &RoleTokens::new(),
            seams,
            None,
            shutdown.clone(),
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(sts.calls(), 1);
        let key = |table: &watch::Receiver<Arc<RoleTable>>, name: &str| {
            let table = table.borrow();
            let status = table.get(name)?.shared_status()?;
            status.current.map(|s| s.credentials.access_key_id.clone())
        };
        let first = key(&table, "piyo").unwrap();

        let mut restricted = piyo.clone();
        restricted.allowed_groups = vec!["ops".to_owned()];
        let tokens = RoleTokens::from([("piyo".to_owned(), AuthToken::generate())]);
        let plan = supervisor.apply(&[restricted, crate::fake::role("fuga")], &tokens);
        assert_eq!(
            (plan.kept, plan.started),
            (vec!["piyo".to_owned()], vec!["fuga".to_owned()])
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(sts.calls(), 2, "only the new role was fetched");
        assert_eq!(key(&table, "piyo").unwrap(), first);
        let entry = table.borrow().get("piyo").cloned().unwrap();
        assert_eq!(
            entry.config.allowed_groups,
            ["ops"],
            "new access settings apply"
        );
        assert!(entry.token.is_some());
        assert!(key(&table, "fuga").is_some());

        supervisor.apply(&[crate::fake::role("fuga")], &RoleTokens::new());
        assert!(table.borrow().get("piyo").is_none());
        supervisor.wait().await.unwrap();
    }

    #[test]
    fn identical_lists_change_nothing() {
        let roles = [role("a", "111111111111")];
        let plan = plan(&roles, &roles);
        assert_eq!(plan.kept, ["a"]);
        assert!(plan.started.is_empty() && plan.changed.is_empty() && plan.stopped.is_empty());
    }
}
