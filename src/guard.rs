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
//! With `[containers]`, the same table also covers containers on this host, whose traffic
//! arrives on an interface of the host (a bridge, a veth) rather than from a local socket:
//! their connections to the instance metadata are sent to the daemon's container listener
//! (`imds = "redirect"`) or refused (`"block"`), in the `prerouting`, `input` and `forward`
//! hooks, for everything that does not come in on loopback. `guard apply` also puts the
//! container addresses (169.254.170.23, `fd00:ec2::23`) on an interface of the daemon's own, a
//! dummy link (`assume-roled0`), or on loopback where the kernel has no dummy driver; the
//! daemon listens there, and no `route_localnet` is needed. `guard remove` takes them away.
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
//! touches the firewall: `assume-roled guard apply` (as root, before it starts) and
//! `guard watch` ([`watch`], as root with `CAP_NET_ADMIN` alone) do.
//!
//! The guard fails closed: a configuration it cannot use, or rules that cannot be installed,
//! put [`lockdown_rules`] in place. In redirect mode it also refuses, in the filter chain, any
//! metadata connection that was not redirected (one made while the table was briefly gone
//! lives on in connection tracking without the NAT), and a redirect whose destination another
//! user holds is installed as a block ([`squatted`]).

use std::io::Write;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
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
    /// `ip` could not put the container addresses in place, or take them away.
    #[error("{0}")]
    Link(String),
    /// The lockdown rules are in place instead of the configured ones, for this reason.
    #[error("{0}; {LOCKDOWN_TEXT}")]
    LockedDown(String),
}

mod events;
mod links;
pub mod watch;

/// The link the container addresses are put on.
pub const LINK: &str = "assume-roled0";

/// What the rules are made of, names resolved to ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Local users' metadata traffic (`[imds] guard`), if guarded.
    pub local: Option<LocalRules>,
    /// Containers' traffic (`[containers]`), if served.
    pub containers: Option<ContainerRules>,
}

/// What local users' connections to the instance metadata meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRules {
    /// What non-exempt metadata traffic meets.
    pub mode: GuardMode,
    /// The daemon's own listener, exactly (`server.listen`), where `redirect` sends it: a
    /// redirect to "this host, port P" would reach whoever holds P on another loopback address.
    pub target: Option<SocketAddrV4>,
    /// Users who keep the real instance metadata (root always among them).
    pub exempt_uids: Vec<u32>,
    /// Groups whose processes keep it.
    pub exempt_gids: Vec<u32>,
}

/// What containers' connections to the instance metadata meet, and where the daemon serves
/// containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRules {
    /// Redirected to the daemon, or refused.
    pub mode: GuardMode,
    /// The daemon's container listener that `redirect` sends metadata traffic to (IPv4).
    pub listener: Option<SocketAddrV4>,
    /// The addresses to put on the daemon's link.
    pub addresses: Vec<IpAddr>,
}

/// The nft script that replaces the daemon's table with `rules`.
pub fn ruleset(rules: &Rules) -> String {
    let mut text = format!("{}table inet {TABLE} {{\n", removal());
    if let Some(local) = &rules.local {
        text.push_str(&local_chains(local));
    }
    if let Some(containers) = &rules.containers {
        text.push_str(&container_chains(containers));
    }
    text.push_str("}\n");
    text
}

/// The chains for containers: their traffic comes in on an interface, not from a socket, so
/// the rules look at everything not arriving on loopback: before routing (the redirect), and
/// where it is delivered here (the metadata address on this host) or routed on (to the real
/// instance metadata).
fn container_chains(rules: &ContainerRules) -> String {
    let from_outside = "iifname != \"lo\"";
    let refused = vec![
        format!("{from_outside} ip daddr {METADATA_V4} tcp dport 80 reject with tcp reset"),
        format!("{from_outside} ip6 daddr {METADATA_V6} tcp dport 80 reject with tcp reset"),
    ];
    let mut text = String::new();
    if let (GuardMode::Redirect, Some(listener)) = (rules.mode, rules.listener) {
        let dnat =
            format!("{from_outside} ip daddr {METADATA_V4} tcp dport 80 dnat ip to {listener}");
        text.push_str(&chain(
            "containers_redirect",
            "nat",
            "prerouting",
            "-100",
            &[dnat],
        ));
    }
    text.push_str(&chain(
        "containers_refuse_in",
        "filter",
        "input",
        "0",
        &refused,
    ));
    text.push_str(&chain(
        "containers_refuse_on",
        "filter",
        "forward",
        "0",
        &refused,
    ));
    text
}

/// The chains for local users' sockets.
fn local_chains(rules: &LocalRules) -> String {
    let exempt = exempt_lines(rules);
    let refuse_v6 = format!("ip6 daddr {METADATA_V6} tcp dport 80 reject with tcp reset");
    let (nat, refused) = match (rules.mode, rules.target) {
        // The filter chain sees redirected packets with the listener as destination: what
        // still goes to the metadata address is a connection made while the table was gone,
        // which connection tracking would keep un-redirected. It is cut.
        (GuardMode::Redirect, Some(target)) => (
            Some(format!(
                "ip daddr {METADATA_V4} tcp dport 80 dnat ip to {target}"
            )),
            vec![
                format!("ip daddr {METADATA_V4} tcp dport 80 reject with tcp reset"),
                refuse_v6,
            ],
        ),
        // Nowhere to redirect to (the configuration refuses that): refused, as in block.
        (GuardMode::Redirect, None) | (GuardMode::Block, _) => (
            None,
            vec![
                format!("ip daddr {METADATA_V4} tcp dport 80 reject with tcp reset"),
                refuse_v6,
            ],
        ),
    };
    let mut text = String::new();
    if let Some(redirect) = nat {
        let body = [exempt.clone(), vec![redirect]].concat();
        text.push_str(&chain("metadata_redirect", "nat", "output", "-100", &body));
    }
    let body = [exempt, refused].concat();
    text.push_str(&chain("metadata_refuse", "filter", "output", "0", &body));
    text
}

/// What `guard apply` says it installed.
pub fn describe(rules: &Rules) -> String {
    let mut text = String::new();
    if let Some(local) = &rules.local {
        text.push_str(&format!(
            "guard applied: {} for all but uids {:?} and gids {:?} (nft table inet {TABLE})\n",
            local.mode.as_str(),
            local.exempt_uids,
            local.exempt_gids,
        ));
    }
    if let Some(containers) = &rules.containers {
        let addresses: Vec<String> = containers.addresses.iter().map(IpAddr::to_string).collect();
        text.push_str(&format!(
            "containers: metadata {}; {} on link {LINK} (nft table inet {TABLE})\n",
            containers.mode.as_str(),
            addresses.join(", "),
        ));
    }
    text
}

/// The nft script that removes the daemon's table, whether or not it exists.
pub fn removal() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

fn exempt_lines(rules: &LocalRules) -> Vec<String> {
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

fn chain(name: &str, kind: &str, hook: &str, priority: &str, rules: &[String]) -> String {
    let mut text = format!(
        "\tchain {name} {{\n\t\ttype {kind} hook {hook} priority {priority}; policy accept;\n"
    );
    for rule in rules {
        text.push_str(&format!("\t\t{rule}\n"));
    }
    text.push_str("\t}\n");
    text
}

/// The rules `config` asks for, with names resolved through the name service, and what could
/// not be honoured: an exempt user or group the name service does not know (deleted, or SSSD
/// not up yet at boot) is left out, with a warning, and the rest applies. Leaving a name out
/// only takes the real metadata from that user; never the other way round.
pub fn rules_for(config: &Config) -> Result<(Rules, Vec<String>), GuardError> {
    let mut warnings = Vec::new();
    let local = (config.imds.as_ref())
        .and_then(|imds| Some((imds, imds.guard?)))
        .map(|(imds, mode)| local_rules_for(config, imds, mode, &mut warnings));
    let containers = config.containers.as_ref().map(|containers| ContainerRules {
        mode: containers.imds,
        listener: containers.listen.iter().find_map(|address| match address {
            SocketAddr::V4(v4) => Some(*v4),
            SocketAddr::V6(_) => None,
        }),
        addresses: containers.listen.iter().map(SocketAddr::ip).collect(),
    });
    if local.is_none() && containers.is_none() {
        return Err(GuardError::NotConfigured);
    }
    Ok((Rules { local, containers }, warnings))
}

fn local_rules_for(
    config: &Config,
    imds: &crate::config::ImdsConfig,
    mode: GuardMode,
    warnings: &mut Vec<String>,
) -> LocalRules {
    let mut exempt_uids = vec![0];
    exempt_uids.extend(accounts::user_id(DAEMON_USER));
    for user in &imds.exempt_users {
        match accounts::user_id(user) {
            Some(uid) => exempt_uids.push(uid),
            None => warnings.push(format!(
                "exempt user {user:?} is unknown to the name service: not exempt"
            )),
        }
    }
    let mut exempt_gids = Vec::new();
    for group in &imds.exempt_groups {
        match accounts::group_id(group) {
            Some(gid) => exempt_gids.push(gid),
            None => warnings.push(format!(
                "exempt group {group:?} is unknown to the name service: not exempt"
            )),
        }
    }
    exempt_uids.sort_unstable();
    exempt_uids.dedup();
    exempt_gids.sort_unstable();
    exempt_gids.dedup();
    LocalRules {
        mode,
        target: crate::config::redirect_target(config.server.listen).ok(),
        exempt_uids,
        exempt_gids,
    }
}

/// The rules for when the configuration cannot be used: instance metadata refused to every
/// local user but root and the daemon's own user (whose identity may come from it), and to
/// containers. The guard fails closed: a broken file never opens the metadata.
pub fn lockdown_rules() -> Rules {
    lockdown_rules_for(accounts::user_id(DAEMON_USER))
}

/// [`lockdown_rules`] where the daemon's user has `daemon_uid` (if it exists). Pure.
fn lockdown_rules_for(daemon_uid: Option<u32>) -> Rules {
    let mut exempt_uids = vec![0];
    exempt_uids.extend(daemon_uid.filter(|uid| *uid != 0));
    Rules {
        local: Some(LocalRules {
            mode: GuardMode::Block,
            target: None,
            exempt_uids,
            exempt_gids: Vec::new(),
        }),
        containers: Some(ContainerRules {
            mode: GuardMode::Block,
            listener: None,
            addresses: Vec::new(),
        }),
    }
}

/// What the guard should be, as worked out from the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    /// The rules the configuration asks for, and the names they could not honour.
    Rules {
        /// What to install.
        rules: Rules,
        /// The exempt names left out.
        warnings: Vec<String>,
    },
    /// Neither a guard nor containers configured: no table.
    Nothing,
    /// The configuration cannot be used: [`lockdown_rules`].
    Lockdown {
        /// Why.
        cause: String,
    },
}

impl Desired {
    /// What the configuration at `path` asks of the guard. Names are not required to resolve
    /// here (see [`rules_for`]); every other problem of the file is a lockdown.
    pub fn from_file(path: &std::path::Path) -> Self {
        match crate::config::load_for_guard(path) {
            Ok(config) => Self::from_config(&config),
            Err(error) => Desired::Lockdown {
                cause: error.to_string(),
            },
        }
    }

    /// What a loaded configuration asks of the guard.
    pub fn from_config(config: &Config) -> Self {
        match rules_for(config) {
            Ok((rules, warnings)) => Desired::Rules { rules, warnings },
            Err(GuardError::NotConfigured) => Desired::Nothing,
            // Never "no table" for a failure: the guard fails closed.
            Err(error) => Desired::Lockdown {
                cause: error.to_string(),
            },
        }
    }

    /// Whether working this out again later may give another answer (a name not known yet).
    pub fn unresolved(&self) -> bool {
        matches!(self, Desired::Rules { warnings, .. } if !warnings.is_empty())
    }
}

/// What [`enforce`] put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforced {
    /// The rules asked for.
    Rules(Rules),
    /// No table (none asked for).
    Removed,
    /// The lockdown rules, because of `cause`: the configuration could not be used, or the
    /// rules it asks for could not be installed.
    Lockdown {
        /// Why.
        cause: String,
    },
}

/// Whether `desired` redirects to an address where another user's listener would receive the
/// connections: while the daemon and its socket are down, anyone may bind its port.
pub fn squatted(desired: &Desired) -> bool {
    let Some(target) = redirect_target(desired) else {
        return false;
    };
    let read = |path| std::fs::read_to_string(path).unwrap_or_default();
    let mut trusted = vec![0];
    trusted.extend(accounts::user_id(DAEMON_USER));
    foreign_listener(
        &read("/proc/net/tcp"),
        &read("/proc/net/tcp6"),
        target,
        &trusted,
    )
}

/// Where `desired` redirects the local users' metadata connections, if it does. Pure.
fn redirect_target(desired: &Desired) -> Option<SocketAddrV4> {
    let Desired::Rules { rules, .. } = desired else {
        return None;
    };
    rules.local.as_ref().and_then(|local| match local.mode {
        GuardMode::Redirect => local.target,
        GuardMode::Block => None,
    })
}

/// Whether the listener that would accept connections to `target`, as the kernel's tables
/// `tcp` and `tcp6` list them, belongs to a uid not in `trusted`. The kernel prefers a listener
/// on the address itself (or its IPv4-mapped form) to one on every address (`0.0.0.0`, `::`).
pub fn foreign_listener(tcp: &str, tcp6: &str, target: SocketAddrV4, trusted: &[u32]) -> bool {
    // As the kernel prints local addresses (the peer lookup's fallback reads the same tables).
    let text = |address: SocketAddr| crate::peer::kernel_text(address);
    let port = target.port();
    let exact_v4 = text(SocketAddr::V4(target));
    let exact_v6 = text(crate::sockdiag::mapped(SocketAddr::V4(target)));
    let any_v4 = text(SocketAddr::new(
        std::net::Ipv4Addr::UNSPECIFIED.into(),
        port,
    ));
    let any_v6 = text(SocketAddr::new(
        std::net::Ipv6Addr::UNSPECIFIED.into(),
        port,
    ));
    // (exact, uid) of each listener on the port.
    let listeners: Vec<(bool, u32)> = tcp
        .lines()
        .chain(tcp6.lines())
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, uid) = (fields.get(1)?, fields.get(3)?, fields.get(7)?);
            if *state != "0A" {
                return None;
            }
            let exact = *local == exact_v4 || *local == exact_v6;
            let any = *local == any_v4 || *local == any_v6;
            (exact || any).then(|| Some((exact, uid.parse().ok()?)))?
        })
        .collect();
    let foreign = |&(_, uid): &(bool, u32)| !trusted.contains(&uid);
    match listeners
        .iter()
        .filter(|(exact, _)| *exact)
        .collect::<Vec<_>>()
    {
        exact if !exact.is_empty() => exact.into_iter().any(foreign),
        _ => listeners.iter().any(foreign),
    }
}

/// Makes the firewall and the daemon's link match `desired`, failing closed: when the rules
/// asked for cannot be installed, the lockdown rules are. An error means not even those could
/// be (no nft, no right to change the firewall) and the table is as it was. A redirect whose
/// destination another user holds ([`squatted`]) is installed as a block until they let go.
pub fn enforce(desired: &Desired) -> Result<Enforced, GuardError> {
    match desired {
        Desired::Rules { rules, .. } => {
            let rules = unsquatted(rules, squatted(desired));
            install_or_lock_down(rules)
        }
        Desired::Nothing => {
            // Removing what an earlier configuration installed is best effort: without
            // nftables, or without the right to change the firewall (a container), there is
            // none to remove.
            match remove() {
                Ok(()) | Err(GuardError::NoNft) => {}
                Err(error) => eprintln!("assume-roled: no guard configured; {error}"),
            }
            Ok(Enforced::Removed)
        }
        Desired::Lockdown { cause } => {
            // The container addresses stay as they are: the running daemon may listen there.
            run_nft(&ruleset(&lockdown_rules()))?;
            Ok(Enforced::Lockdown {
                cause: cause.clone(),
            })
        }
    }
}

/// Installs `rules`, or the lockdown when they cannot be installed.
fn install_or_lock_down(rules: Rules) -> Result<Enforced, GuardError> {
    match install(&rules) {
        Ok(()) => Ok(Enforced::Rules(rules)),
        Err(error) => {
            let cause = format!("the rules could not be installed: {error}");
            run_nft(&ruleset(&lockdown_rules())).map_err(|_| error)?;
            Ok(Enforced::Lockdown { cause })
        }
    }
}

/// `rules`, with the redirect made a block when another user holds its destination.
fn unsquatted(rules: &Rules, squatted: bool) -> Rules {
    let mut rules = rules.clone();
    if let Some(local) = rules.local.as_mut().filter(|_| squatted) {
        eprintln!(
            "assume-roled: another user listens where the redirect would send metadata \
             requests ({}): refusing them instead until the daemon holds its address",
            local.target.map_or_else(String::new, |t| t.to_string())
        );
        local.mode = GuardMode::Block;
    }
    rules
}

fn install(rules: &Rules) -> Result<(), GuardError> {
    let addresses = rules.containers.as_ref().map_or(&[][..], |c| &c.addresses);
    links::set(addresses)?;
    run_nft(&ruleset(rules))
}

/// The names `desired` could not honour.
pub fn warnings(desired: &Desired) -> &[String] {
    match desired {
        Desired::Rules { warnings, .. } => warnings,
        _ => &[],
    }
}

/// What the lockdown means, for the operator.
pub const LOCKDOWN_TEXT: &str = "instance metadata is refused to every user but root and the \
    daemon's, and to containers, until the configuration is fixed and applied again (or \
    `assume-roled guard remove` opens it)";

/// Removes the daemon's table and its link (or its addresses on loopback); nothing else.
pub fn remove() -> Result<(), GuardError> {
    let table = run_nft(&removal());
    links::set(&[])?;
    table
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
            local: Some(LocalRules {
                mode,
                target: Some("127.0.0.1:9357".parse().unwrap()),
                exempt_uids: vec![0, 998],
                exempt_gids: vec![1500],
            }),
            containers: None,
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
            \t\tip daddr 169.254.169.254 tcp dport 80 dnat ip to 127.0.0.1:9357\n\t}\n";
        assert!(text.contains(expected), "{text}");
        assert!(text.contains("ip6 daddr fd00:ec2::254 tcp dport 80 reject with tcp reset"));
        // A connection that escaped the redirect (made while the table was gone) is cut, in
        // the filter chain, after the exemptions.
        let filter = &text[text.find("chain metadata_refuse").unwrap()..];
        let exempt = filter.find("meta skuid").unwrap();
        let cut = filter
            .find("ip daddr 169.254.169.254 tcp dport 80 reject with tcp reset")
            .unwrap();
        assert!(exempt < cut, "{filter}");
    }

    /// The lockdown (a configuration the guard cannot use) refuses metadata to every local
    /// user but root (and the daemon's user, where it exists) and to containers, and sends
    /// nothing anywhere.
    /// The lockdown exempts root and the daemon's own user (once, whatever its uid), nobody else.
    #[test]
    fn lockdown_exempts_root_and_the_daemons_user() {
        let exempt = |daemon_uid| lockdown_rules_for(daemon_uid).local.unwrap().exempt_uids;
        assert_eq!(exempt(Some(998)), [0, 998]);
        assert_eq!(exempt(None), [0]);
        assert_eq!(exempt(Some(0)), [0]);
    }

    /// What the guard is asked for, read without touching the firewall: where it redirects,
    /// which names it could not honour, and what `guard apply` says.
    #[test]
    fn desired_rules_say_where_they_redirect_and_what_they_left_out() {
        let desired = |mode, warnings: &[&str]| Desired::Rules {
            rules: rules(mode),
            warnings: warnings.iter().map(|w| w.to_string()).collect(),
        };
        let redirect = desired(GuardMode::Redirect, &[]);
        assert_eq!(
            redirect_target(&redirect),
            Some("127.0.0.1:9357".parse().unwrap())
        );
        assert_eq!(redirect_target(&desired(GuardMode::Block, &[])), None);
        assert_eq!(redirect_target(&Desired::Nothing), None);
        assert!(!redirect.unresolved() && warnings(&redirect).is_empty());
        let left_out = desired(GuardMode::Block, &["exempt group ops: no such group"]);
        assert!(left_out.unresolved());
        assert_eq!(warnings(&left_out), ["exempt group ops: no such group"]);
        let lockdown = Desired::Lockdown {
            cause: "bad file".into(),
        };
        assert!(!lockdown.unresolved() && warnings(&lockdown).is_empty());
        assert!(
            !squatted(&desired(GuardMode::Block, &[])),
            "a block redirects nowhere"
        );
        let said = describe(&rules(GuardMode::Redirect));
        assert_eq!(
            said,
            "guard applied: redirect for all but uids [0, 998] and gids [1500] (nft table inet \
             assume_roled)\n"
        );
    }

    /// A guard for the local users alone, or for containers alone, is a table; neither is
    /// nothing to install.
    #[test]
    fn either_part_alone_is_a_table() {
        let base = "[[roles]]\nname = \"piyo\"\narn = \"arn:aws:iam::444455556666:role/piyo-role\"\n\
                    allowed_users = [\"root\"]\nallowed_networks = [\"172.17.0.0/16\"]\n";
        let config =
            |extra: &str| crate::config::from_toml(&format!("{base}{extra}"), "h").unwrap();
        let local = config("[imds]\nrole = \"piyo\"\nguard = \"block\"\n");
        assert!(rules_for(&local).unwrap().0.local.is_some());
        let containers = config("[containers]\nlisten = [\"169.254.170.23:80\"]\n");
        assert!(rules_for(&containers).unwrap().0.containers.is_some());
        assert!(matches!(
            rules_for(&config("")),
            Err(GuardError::NotConfigured)
        ));
    }

    #[test]
    fn lockdown_refuses_all_but_root_and_containers() {
        let text = ruleset(&lockdown_rules());
        assert!(
            !text.contains("dnat") && !text.contains("redirect"),
            "{text}"
        );
        let exempt = text.lines().find(|l| l.contains("meta skuid")).unwrap();
        let uids: Vec<u32> = exempt
            .split(['{', '}'])
            .nth(1)
            .unwrap()
            .split(',')
            .map(|uid| uid.trim().parse().unwrap())
            .collect();
        assert_eq!(uids[0], 0, "{exempt}");
        assert_eq!(
            uids[1..],
            accounts::user_id(DAEMON_USER)
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert!(!text.contains("skgid"), "no exempt groups: {text}");
        assert!(text.contains("ip daddr 169.254.169.254 tcp dport 80 reject with tcp reset"));
        assert!(text.contains(
            "iifname != \"lo\" ip daddr 169.254.169.254 tcp dport 80 reject with tcp reset"
        ));
    }

    /// The listener that would receive redirected connections: one on the address itself wins
    /// over one on every address; only root's and the daemon's are trusted.
    #[test]
    fn a_foreign_listener_on_the_redirect_target_is_found() {
        // Port 9333 is 2475 in the kernel's hexadecimal.
        let target: SocketAddrV4 = "127.0.0.1:9333".parse().unwrap();
        let row = |local: &str, state: &str, uid: u32| {
            format!(
                "   0: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000 {uid:>5}        0 1234 1\n"
            )
        };
        let trusted = [0, 998];
        let found = |tcp: &str, tcp6: &str| foreign_listener(tcp, tcp6, target, &trusted);
        assert!(!found("", ""), "nobody listens");
        assert!(
            !found(&row("0100007F:2475", "0A", 0), ""),
            "systemd's socket"
        );
        assert!(!found(&row("0100007F:2475", "0A", 998), ""), "the daemon");
        assert!(
            found(&row("0100007F:2475", "0A", 1001), ""),
            "a user on the address"
        );
        assert!(
            found(&row("00000000:2475", "0A", 1001), ""),
            "a user on every address"
        );
        let held = row("0100007F:2475", "0A", 998) + &row("00000000:2475", "0A", 1001);
        assert!(
            !found(&held, ""),
            "the daemon's own address wins over every address"
        );
        let mapped = row("0000000000000000FFFF00000100007F:2475", "0A", 1001);
        assert!(
            found("", &mapped),
            "a dual-stack socket on the mapped address"
        );
        let any6 = row(&format!("{}:2475", "0".repeat(32)), "0A", 1001);
        assert!(found("", &any6), "a dual-stack socket on every address");
        assert!(
            !found(&row("0100007F:2476", "0A", 1001), ""),
            "another port"
        );
        assert!(
            !found(&row("0100007F:2475", "01", 1001), ""),
            "a connection, not a listener"
        );
        assert!(
            !found(&row("0200007F:2475", "0A", 1001), ""),
            "another address"
        );
    }

    /// Redirect goes to the listen address itself, whatever loopback address it is.
    #[test]
    fn redirect_goes_to_the_exact_listen_address() {
        let mut elsewhere = rules(GuardMode::Redirect);
        elsewhere.local.as_mut().unwrap().target = Some("127.0.0.2:9400".parse().unwrap());
        let text = ruleset(&elsewhere);
        assert!(
            text.contains("tcp dport 80 dnat ip to 127.0.0.2:9400"),
            "{text}"
        );
        elsewhere.local.as_mut().unwrap().target = None;
        let nowhere = ruleset(&elsewhere);
        assert!(!nowhere.contains("dnat"), "{nowhere}");
        assert!(nowhere.contains("ip daddr 169.254.169.254 tcp dport 80 reject"));
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
        only_root.local.as_mut().unwrap().exempt_gids.clear();
        assert!(!ruleset(&only_root).contains("skgid"));
    }

    /// Containers' metadata traffic, from any interface but loopback: sent to the container
    /// listener (redirect) and refused otherwise, delivered here or routed on; local users'
    /// rules are not needed for it.
    #[test]
    fn containers_are_redirected_or_refused_whatever_the_local_rules() {
        let containers = |mode| Rules {
            local: None,
            containers: Some(ContainerRules {
                mode,
                listener: Some("169.254.170.23:80".parse().unwrap()),
                addresses: vec!["169.254.170.23".parse().unwrap()],
            }),
        };
        let text = ruleset(&containers(GuardMode::Redirect));
        let redirect = "\tchain containers_redirect {\n\
            \t\ttype nat hook prerouting priority -100; policy accept;\n\
            \t\tiifname != \"lo\" ip daddr 169.254.169.254 tcp dport 80 dnat ip to 169.254.170.23:80\n\t}\n";
        assert!(text.contains(redirect), "{text}");
        for hook in ["input", "forward"] {
            assert!(
                text.contains(&format!("type filter hook {hook} priority 0")),
                "{text}"
            );
        }
        assert!(text.contains(
            "iifname != \"lo\" ip6 daddr fd00:ec2::254 tcp dport 80 reject with tcp reset"
        ));
        assert!(!text.contains("skuid"), "no local rules asked for");
        let blocked = ruleset(&containers(GuardMode::Block));
        assert!(!blocked.contains("dnat"), "{blocked}");
        assert!(blocked.contains(
            "iifname != \"lo\" ip daddr 169.254.169.254 tcp dport 80 reject with tcp reset"
        ));
    }
}
