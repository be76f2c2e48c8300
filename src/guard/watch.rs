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
use super::{Desired, Enforced, LOCKDOWN_TEXT, TABLE, describe, enforce, lockdown_rules, ruleset};
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
/// How often the redirect's destination port is checked for another user's listener.
const RECEIVER_CHECK: Duration = Duration::from_secs(2);

/// Runs the watch until SIGTERM or SIGINT.
pub async fn run(config: &Path) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangups = signal(SignalKind::hangup())?;
    let notifier = Notifier::from_env();
    let mut changes = follow()?;
    let mut keeper = Keeper::new(config.to_owned(), state_file());
    keeper.enforce();
    notifier.send("READY=1");
    // Looks that happen whatever the notifications do: a notification lost while the monitor
    // (re)starts, a name that did not resolve, a port another user took.
    let mut safety = tokio::time::interval(SAFETY_LOOK);
    let mut names = tokio::time::interval(NAME_RETRY);
    let mut receiver = tokio::time::interval(RECEIVER_CHECK);
    for timer in [&mut safety, &mut names, &mut receiver] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    // The monitor joins the notification group a moment after it starts: a change made in
    // between is caught by this first look.
    tokio::time::sleep(MONITOR_START).await;
    keeper.look();
    loop {
        tokio::select! {
            changed = changes.next() => match changed {
                Ok(()) => {
                    tokio::time::sleep(SETTLE).await;
                    keeper.look();
                }
                Err(error) => {
                    warn!(%error, "following nf_tables' changes again");
                    keeper.look();
                    tokio::time::sleep(MONITOR_RESTART).await;
                    changes = follow()?;
                    tokio::time::sleep(MONITOR_START).await;
                    keeper.look();
                }
            },
            _ = hangups.recv() => {
                info!("re-reading the configuration");
                notifier.send("RELOADING=1");
                keeper.reload();
                notifier.send("READY=1");
            }
            _ = safety.tick() => keeper.look(),
            _ = names.tick() => keeper.retry_names(),
            _ = receiver.tick() => keeper.check_receiver(),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
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
    /// A ruleset and the listing it gave when first applied: a later apply of the same ruleset
    /// listing otherwise was changed in between, and is looked at again.
    known_good: Option<(String, String)>,
    state: GuardState,
    /// The table is not known to be as wanted (the last apply failed, or it was changed again
    /// before it could be listed): the next look applies it whatever it lists.
    unsettled: bool,
    /// Another user held the redirect's destination at the last apply.
    squatted: bool,
}

impl Keeper {
    fn new(config: PathBuf, state_file: PathBuf) -> Self {
        let desired = Desired::from_file(&config);
        Self {
            config,
            state_file,
            desired,
            expected: None,
            known_good: None,
            state: GuardState::default(),
            unsettled: false,
            squatted: false,
        }
    }

    /// Puts the desired table in place, and says what it is.
    fn enforce(&mut self) {
        for warning in super::warnings(&self.desired) {
            warn!("{warning}");
        }
        self.squatted = super::squatted(&self.desired);
        let enforced = enforce(&self.desired);
        match &enforced {
            Ok(Enforced::Rules(rules)) => info!("{}", describe(rules).trim_end()),
            Ok(Enforced::Removed) => {
                info!("no [imds] guard or [containers] configured; no table");
            }
            Ok(Enforced::Lockdown { cause }) => error!("{cause}; {LOCKDOWN_TEXT}"),
            Err(error) => error!(%error, "the guard could not be put in place"),
        }
        self.expected = current_table();
        let settled = match &enforced {
            Ok(Enforced::Rules(rules)) => self.listed_as_before(ruleset(rules)),
            Ok(Enforced::Lockdown { .. }) => self.listed_as_before(ruleset(&lockdown_rules())),
            Ok(Enforced::Removed) => self.expected.is_none(),
            Err(_) => false,
        };
        self.unsettled = !settled;
        self.state.in_place =
            settled && matches!(enforced, Ok(Enforced::Rules(_) | Enforced::Removed));
        self.state.lockdown = settled && matches!(enforced, Ok(Enforced::Lockdown { .. }));
        self.save();
    }

    /// Whether the table just applied from `script` lists as it did when that script was
    /// first applied (and lists at all). Changed in between (another flush, another tool), what
    /// nft lists is not ours, and the change's notification brings another look.
    fn listed_as_before(&mut self, script: String) -> bool {
        let Some(listed) = self.expected.clone() else {
            return false;
        };
        match &self.known_good {
            Some((known, good)) if *known == script => *good == listed,
            _ => {
                self.known_good = Some((script, listed));
                true
            }
        }
    }

    /// Looks at the table; puts it back if it is not as it was left.
    fn look(&mut self) {
        if current_table() == self.expected && !self.unsettled {
            return;
        }
        warn!(
            table = TABLE,
            "the guard's table was removed or changed (a firewall reload, `nft flush ruleset`, \
             another tool); putting it back"
        );
        self.state.reapplied += 1;
        // Back first, as it was: no wait on the file or the name service.
        self.enforce();
        // Then what the configuration asks for now: another apply (the daemon's ExecStartPre,
        // an operator's `guard apply`) may have installed a newer configuration's table.
        let now = Desired::from_file(&self.config);
        if now != self.desired {
            self.desired = now;
            self.enforce();
        }
    }

    /// An exempt name that did not resolve is tried again.
    fn retry_names(&mut self) {
        if !self.desired.unresolved() {
            return;
        }
        let desired = Desired::from_file(&self.config);
        if desired != self.desired {
            info!("the configuration's exempt names resolve differently now; applying");
            self.desired = desired;
            self.enforce();
        }
    }

    /// Whether the redirect's destination is still the daemon's (or nobody's): another user
    /// may have taken the port while the daemon and its socket were down (the redirect is then
    /// a block until they let go of it).
    fn check_receiver(&mut self) {
        if super::squatted(&self.desired) != self.squatted {
            self.enforce();
        }
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
            let _ = std::fs::remove_file(&temporary);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temporary)?;
            std::io::Write::write_all(&mut file, self.state.render().as_bytes())?;
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
