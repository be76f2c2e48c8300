//! `assume-roled guard watch`: the guard kept in place for as long as the host runs.
//!
//! It applies the table the configuration asks for (failing closed, see [`super::enforce`]),
//! remembers the table as nft lists it, and looks again whenever nf_tables reports a change to
//! any table ([`super::events`]): a `flush ruleset` (Debian's `/etc/nftables.conf` starts with
//! one, so every `systemctl reload nftables` does it), a firewall tool rebuilding the ruleset,
//! a hand edit. If the table is gone or different it is put back at once (a warning in the
//! journal, and a count). Notifications rather than polling: the table is back in
//! milliseconds, and an idle host costs nothing; a look every minute covers notifications the
//! kernel could not deliver. SIGHUP (and, from the unit, a reload of the daemon) re-reads the
//! configuration; an exempt name that does not resolve yet is tried again every 30 s. SIGTERM
//! ends the watch and leaves the rules in place: only `guard remove` opens the metadata.
//!
//! What it found is written to a small state file ([`crate::guard_state`]) that the daemon's
//! metrics, `status` and `check` read: whether the guard is in place and how often it was put
//! back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use super::events::Changes;
use super::{Desired, Enforced, LOCKDOWN_TEXT, TABLE, describe, enforce};
use crate::guard_state::{GuardState, state_file};
use crate::notify::Notifier;

/// How long after a notification the table is looked at: a transaction's notifications
/// arrive together, and a tool rebuilding the ruleset may commit twice in a row.
const SETTLE: Duration = Duration::from_millis(5);
/// How often the table is looked at without a notification.
const SAFETY_LOOK: Duration = Duration::from_secs(60);
/// How often an exempt name that did not resolve is tried again.
const NAME_RETRY: Duration = Duration::from_secs(30);
/// How soon after `nft monitor` starts the table is looked at once more.
const MONITOR_START: Duration = Duration::from_millis(200);
/// How long to wait before starting `nft monitor` again after it ended.
const MONITOR_RESTART: Duration = Duration::from_secs(1);
/// Runs the watch until SIGTERM or SIGINT.
pub async fn run(config: &Path) -> anyhow::Result<()> {
    let mut changes = follow()?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangups = signal(SignalKind::hangup())?;
    let notifier = Notifier::from_env();
    let mut keeper = Keeper::new(config.to_owned(), state_file());
    keeper.enforce();
    notifier.send("READY=1");
    // The monitor joins the notification group a moment after it starts: a change made in
    // between is caught by this first look.
    let mut pause = MONITOR_START;
    loop {
        tokio::select! {
            changed = changes.next() => {
                if let Err(error) = changed {
                    warn!(%error, "following nf_tables' changes again");
                    tokio::time::sleep(MONITOR_RESTART).await;
                    changes = follow()?;
                    pause = MONITOR_START;
                    continue;
                }
                tokio::time::sleep(SETTLE).await;
                keeper.look();
            }
            _ = hangups.recv() => {
                info!("re-reading the configuration");
                notifier.send("RELOADING=1");
                keeper.reload();
                notifier.send("READY=1");
            }
            () = tokio::time::sleep(pause) => keeper.recheck(),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        pause = if keeper.desired.unresolved() {
            NAME_RETRY
        } else {
            SAFETY_LOOK
        };
    }
    info!("guard watch stopped; the rules stay in place");
    Ok(())
}

fn follow() -> anyhow::Result<Changes> {
    Changes::subscribe().context("cannot run `nft monitor` to follow nf_tables' changes")
}

/// The table as the configuration wants it, and what nft listed after it was put in place.
struct Keeper {
    config: PathBuf,
    state_file: PathBuf,
    desired: Desired,
    /// `nft list table` right after the last apply (`None`: no table).
    expected: Option<String>,
    state: GuardState,
    /// The last apply could not put anything in place (no nft, say): try again.
    failed: bool,
}

impl Keeper {
    fn new(config: PathBuf, state_file: PathBuf) -> Self {
        let desired = Desired::from_file(&config);
        Self {
            config,
            state_file,
            desired,
            expected: None,
            state: GuardState::default(),
            failed: false,
        }
    }

    /// Puts the desired table in place, and says what it is.
    fn enforce(&mut self) {
        for warning in super::warnings(&self.desired) {
            warn!("{warning}");
        }
        let enforced = enforce(&self.desired);
        self.failed = enforced.is_err();
        match &enforced {
            Ok(Enforced::Rules(rules)) => info!("{}", describe(rules).trim_end()),
            Ok(Enforced::Removed) => {
                info!("no [imds] guard or [containers] configured; no table");
            }
            Ok(Enforced::Lockdown { cause }) => error!("{cause}; {LOCKDOWN_TEXT}"),
            Err(error) => error!(%error, "the guard could not be put in place"),
        }
        self.state.in_place = matches!(enforced, Ok(Enforced::Rules(_) | Enforced::Removed));
        self.state.lockdown = matches!(enforced, Ok(Enforced::Lockdown { .. }));
        self.expected = current_table();
        // Changed again between the apply and the listing (another flush): what was listed is
        // not ours, and the change's notification will have it applied again.
        let installed = matches!(enforced, Ok(Enforced::Rules(_) | Enforced::Lockdown { .. }));
        if installed != self.expected.is_some() {
            self.failed = true;
            self.state.in_place = false;
        }
        self.save();
    }

    /// Looks at the table; puts it back if it is not as it was left.
    fn look(&mut self) {
        if current_table() == self.expected && !self.failed {
            return;
        }
        warn!(
            table = TABLE,
            "the guard's table was removed or changed (a firewall reload, `nft flush ruleset`, \
             another tool); putting it back"
        );
        self.state.reapplied += 1;
        // What the configuration asks for now: another apply (the daemon's ExecStartPre, an
        // operator's `guard apply`) may have installed a newer configuration's table.
        self.desired = Desired::from_file(&self.config);
        self.enforce();
    }

    /// The periodic look; a name that did not resolve is tried again.
    fn recheck(&mut self) {
        if self.desired.unresolved() {
            let desired = Desired::from_file(&self.config);
            if desired != self.desired {
                info!("the configuration's exempt names resolve differently now; applying");
                self.desired = desired;
                self.enforce();
                return;
            }
        }
        self.look();
    }

    fn reload(&mut self) {
        self.desired = Desired::from_file(&self.config);
        self.enforce();
    }

    /// Writes the state file (a new file renamed into place: readers never see half of one).
    fn save(&self) {
        let written = (|| {
            if let Some(dir) = self.state_file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let temporary = self.state_file.with_extension("new");
            std::fs::write(&temporary, self.state.render())?;
            std::fs::rename(&temporary, &self.state_file)
        })();
        if let Err(error) = written {
            warn!(%error, path = %self.state_file.display(), "cannot write the guard's state file");
        }
    }
}

/// The daemon's table as `nft list table` prints it; `None` when there is none (or nft cannot
/// say).
fn current_table() -> Option<String> {
    let output = Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}
