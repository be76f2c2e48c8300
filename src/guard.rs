//! The guard on the host's instance metadata: one nftables table of the daemon's own that
//! decides what a local user's connection to 169.254.169.254:80 (or `[fd00:ec2::254]:80`) does.
//!
//! Without it, any local user reads the instance role's keys from instance metadata and acts as
//! the host, around every token and allow-list of the daemon; and tools that only speak
//! instance metadata act as the instance role, in the wrong account. With `[imds] guard`:
//!
//! - `redirect`: the connection goes to the daemon's own listener, which answers as the
//!   instance metadata with the `[imds]` role, to the users that role admits;
//! - `block`: it is refused at once with a TCP reset (never a hang).
//!
//! root, the daemon's own user and the configured exempt users and groups keep the real
//! instance metadata (the SSM and CloudWatch agents run as root; root could remove any rule
//! anyway). The rules match the socket's owner (`meta skuid`, `meta skgid`: the user and the
//! group a process runs as, not its supplementary groups). IPv6 metadata traffic is refused in
//! both modes: the daemon listens on IPv4 loopback.
//!
//! The rules are text for the `nft` program, rendered by a pure function ([`ruleset`]) and
//! loaded with `nft -f -` in one transaction that creates the table if missing, deletes it and
//! defines it again: applying is atomic and idempotent, and nothing else in the host's firewall
//! is touched. `nft` rather than a netlink library: it is the reference implementation, present
//! wherever nftables is, its transactions are atomic, and the daemon needs nothing but one
//! table of a few lines, with no value in it that needs quoting. The daemon itself never
//! touches the firewall: `assume-roled guard apply` runs as root before it starts.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::accounts;
use crate::config::{Config, GuardMode};

/// The table, in the `inet` family (IPv4 and IPv6).
pub const TABLE: &str = "assume_roled";
/// The user the systemd unit runs the daemon as; exempt when it exists.
pub const DAEMON_USER: &str = "assume-roled";
const METADATA_V4: &str = "169.254.169.254";
const METADATA_V6: &str = "fd00:ec2::254";

/// Why the guard could not be applied or removed.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The configuration has no `[imds] guard`.
    #[error("the configuration sets no [imds] guard; set guard = \"redirect\" or \"block\"")]
    NotConfigured,
    /// An exempt user or group does not exist (any more).
    #[error("{0}")]
    UnknownName(String),
    /// `nft` is not installed.
    #[error("the nft program is missing: install the nftables package (apt-get install nftables)")]
    NoNft,
    /// `nft` refused the rules or could not run.
    #[error("nft failed: {0}")]
    Nft(String),
}

/// What the rules are made of, names resolved to ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// What non-exempt metadata traffic meets.
    pub mode: GuardMode,
    /// The daemon's listener port, where `redirect` sends it.
    pub port: u16,
    /// Users who keep the real instance metadata (root always among them).
    pub exempt_uids: Vec<u32>,
    /// Groups whose processes keep it.
    pub exempt_gids: Vec<u32>,
}

/// The nft script that replaces the daemon's table with `rules`.
pub fn ruleset(rules: &Rules) -> String {
    let exempt = exempt_lines(rules);
    let refuse_v6 = format!("ip6 daddr {METADATA_V6} tcp dport 80 reject with tcp reset");
    let (nat, refused) = match rules.mode {
        GuardMode::Redirect => (
            Some(format!(
                "ip daddr {METADATA_V4} tcp dport 80 redirect to :{}",
                rules.port
            )),
            vec![refuse_v6],
        ),
        GuardMode::Block => (
            None,
            vec![
                format!("ip daddr {METADATA_V4} tcp dport 80 reject with tcp reset"),
                refuse_v6,
            ],
        ),
    };
    let mut text = format!("{}table inet {TABLE} {{\n", removal());
    if let Some(redirect) = nat {
        let body = [exempt.clone(), vec![redirect]].concat();
        text.push_str(&chain("metadata_redirect", "nat", "-100", &body));
    }
    let body = [exempt, refused].concat();
    text.push_str(&chain("metadata_refuse", "filter", "0", &body));
    text.push_str("}\n");
    text
}

/// The nft script that removes the daemon's table, whether or not it exists.
pub fn removal() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

fn exempt_lines(rules: &Rules) -> Vec<String> {
    let set = |ids: &[u32]| {
        let items: Vec<String> = ids.iter().map(u32::to_string).collect();
        format!("{{ {} }}", items.join(", "))
    };
    let mut lines = vec![format!("meta skuid {} accept", set(&rules.exempt_uids))];
    if !rules.exempt_gids.is_empty() {
        lines.push(format!("meta skgid {} accept", set(&rules.exempt_gids)));
    }
    lines
}

fn chain(name: &str, kind: &str, priority: &str, rules: &[String]) -> String {
    let mut text = format!(
        "\tchain {name} {{\n\t\ttype {kind} hook output priority {priority}; policy accept;\n"
    );
    for rule in rules {
        text.push_str(&format!("\t\t{rule}\n"));
    }
    text.push_str("\t}\n");
    text
}

/// The rules `config` asks for, with names resolved through the name service.
pub fn rules_for(config: &Config) -> Result<Rules, GuardError> {
    let imds = config.imds.as_ref().ok_or(GuardError::NotConfigured)?;
    let mode = imds.guard.ok_or(GuardError::NotConfigured)?;
    let mut exempt_uids = vec![0];
    exempt_uids.extend(accounts::user_id(DAEMON_USER));
    for user in &imds.exempt_users {
        let uid = accounts::user_id(user)
            .ok_or_else(|| GuardError::UnknownName(format!("no such user: {user}")))?;
        exempt_uids.push(uid);
    }
    let mut exempt_gids = Vec::new();
    for group in &imds.exempt_groups {
        let gid = accounts::group_id(group)
            .ok_or_else(|| GuardError::UnknownName(format!("no such group: {group}")))?;
        exempt_gids.push(gid);
    }
    exempt_uids.sort_unstable();
    exempt_uids.dedup();
    exempt_gids.sort_unstable();
    exempt_gids.dedup();
    Ok(Rules {
        mode,
        port: config.server.listen.port(),
        exempt_uids,
        exempt_gids,
    })
}

/// Makes the firewall match `config`: installs the rules it asks for, replacing the daemon's
/// table in one transaction, or, when it asks for no guard, removes the table (so that rules
/// of an earlier configuration never outlive it). Returns the rules installed, if any.
pub fn apply(config: &Config) -> Result<Option<Rules>, GuardError> {
    match rules_for(config) {
        Ok(rules) => run_nft(&ruleset(&rules)).map(|()| Some(rules)),
        // Removing what an earlier configuration installed is best effort: without nftables,
        // or without the right to change the firewall (a container), there is none to remove.
        Err(GuardError::NotConfigured) => {
            match remove() {
                Ok(()) | Err(GuardError::NoNft) => {}
                Err(error) => eprintln!("assume-roled: no guard configured; {error}"),
            }
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Removes the daemon's table; nothing else.
pub fn remove() -> Result<(), GuardError> {
    run_nft(&removal())
}

fn run_nft(script: &str) -> Result<(), GuardError> {
    let spawned = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(GuardError::NoNft);
        }
        Err(error) => return Err(GuardError::Nft(error.to_string())),
    };
    let written = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes());
    let output = child
        .wait_with_output()
        .map_err(|error| GuardError::Nft(error.to_string()))?;
    written.map_err(|error| GuardError::Nft(error.to_string()))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(GuardError::Nft(said));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(mode: GuardMode) -> Rules {
        Rules {
            mode,
            port: 9357,
            exempt_uids: vec![0, 998],
            exempt_gids: vec![1500],
        }
    }

    #[test]
    fn redirect_sends_ipv4_to_the_listener_and_refuses_ipv6() {
        let text = ruleset(&rules(GuardMode::Redirect));
        assert!(text.starts_with(
            "table inet assume_roled\ndelete table inet assume_roled\ntable inet assume_roled {\n"
        ));
        let expected = "\tchain metadata_redirect {\n\
            \t\ttype nat hook output priority -100; policy accept;\n\
            \t\tmeta skuid { 0, 998 } accept\n\
            \t\tmeta skgid { 1500 } accept\n\
            \t\tip daddr 169.254.169.254 tcp dport 80 redirect to :9357\n\t}\n";
        assert!(text.contains(expected), "{text}");
        assert!(text.contains("ip6 daddr fd00:ec2::254 tcp dport 80 reject with tcp reset"));
        assert!(!text.contains("ip daddr 169.254.169.254 tcp dport 80 reject"));
    }

    #[test]
    fn block_refuses_both_families_and_redirects_nothing() {
        let text = ruleset(&rules(GuardMode::Block));
        assert!(!text.contains("redirect"), "{text}");
        assert!(text.contains("ip daddr 169.254.169.254 tcp dport 80 reject with tcp reset"));
        assert!(text.contains("ip6 daddr fd00:ec2::254 tcp dport 80 reject with tcp reset"));
        let exempt = text.find("meta skuid { 0, 998 } accept").unwrap();
        assert!(
            exempt < text.find("reject").unwrap(),
            "exemptions come first"
        );
    }

    #[test]
    fn no_group_line_without_exempt_groups() {
        let mut only_root = rules(GuardMode::Block);
        only_root.exempt_gids.clear();
        assert!(!ruleset(&only_root).contains("skgid"));
    }
}
