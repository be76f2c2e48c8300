//! The container addresses on the daemon's own link, with the `ip` program (iproute2), for the
//! same reasons the rules use `nft`: the reference tool, present wherever the rules are, and a
//! handful of idempotent commands.
//!
//! The link is a dummy interface (`assume-roled0`), as the EKS Pod Identity Agent makes for
//! 169.254.170.23: an address of this host that containers route to through their gateway, and
//! that needs no `route_localnet`. On a kernel without the dummy driver the addresses go on
//! loopback instead, which works the same for traffic arriving from a container's interface;
//! what it adds there is recorded, and only that is ever taken away.

use std::net::IpAddr;
use std::process::Command;

use super::{GuardError, LINK};
use crate::config::CONTAINER_ADDRESSES;

/// Where `guard apply` records the addresses it put on loopback (the fallback), so that it
/// only ever takes away what it added: an operator's own addresses there are left alone.
/// In the guard unit's runtime directory (kept across its restarts), the one place its
/// sandbox lets it write.
const ADDED_TO_LOOPBACK: &str = "/run/assume-roled-guard/addresses";

/// Puts exactly `addresses` (container addresses) on the daemon's link, making the link if
/// needed; with none, deletes the link and takes what it had put on loopback away.
pub fn set(addresses: &[IpAddr]) -> Result<(), GuardError> {
    // Nothing to put in place, and no `ip` to have put anything in place before: done (a host
    // with the metadata guard and no containers needs no iproute2).
    if addresses.is_empty() && Command::new("ip").arg("-V").output().is_err() {
        return Ok(());
    }
    let have_link = link_exists()?
        || (!addresses.is_empty() && ip(&["link", "add", LINK, "type", "dummy"]).is_ok());
    if addresses.is_empty() || have_link {
        // Whatever an earlier fallback put on loopback goes; the link is all the daemon's.
        set_on_loopback(&[])?;
    }
    if addresses.is_empty() {
        if link_exists()? {
            ip(&["link", "delete", LINK])?;
        }
        return Ok(());
    }
    if !have_link {
        return set_on_loopback(addresses);
    }
    ip(&["link", "set", LINK, "up"])?;
    for address in addresses {
        add(*address, LINK)?;
    }
    let shown = output(&["-o", "addr", "show", "dev", LINK])?;
    for address in CONTAINER_ADDRESSES {
        if !addresses.contains(&address) && holds(&shown, address) {
            ip(&["addr", "del", &host_prefix(address), "dev", LINK])?;
        }
    }
    Ok(())
}

/// The fallback without a dummy driver: `wanted` on loopback, adding only what is not there
/// yet and taking away only what an earlier run added.
fn set_on_loopback(wanted: &[IpAddr]) -> Result<(), GuardError> {
    let recorded: Vec<IpAddr> = std::fs::read_to_string(ADDED_TO_LOOPBACK)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    for address in recorded.iter().filter(|a| !wanted.contains(a)) {
        // Already gone (a reboot, an operator) is fine.
        let _ = ip(&["addr", "del", &host_prefix(*address), "dev", "lo"]);
    }
    if wanted.is_empty() {
        let _ = std::fs::remove_file(ADDED_TO_LOOPBACK);
        return Ok(());
    }
    let shown = output(&["-o", "addr", "show", "dev", "lo"])?;
    let mut ours: Vec<IpAddr> = recorded
        .into_iter()
        .filter(|a| wanted.contains(a))
        .collect();
    for address in wanted {
        if !holds(&shown, *address) {
            add(*address, "lo")?;
            ours.push(*address);
        }
    }
    if ours.is_empty() {
        let _ = std::fs::remove_file(ADDED_TO_LOOPBACK);
        return Ok(());
    }
    let text: String = ours.iter().map(|a| format!("{a}\n")).collect();
    let record = std::path::Path::new(ADDED_TO_LOOPBACK);
    record
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(record, text))
        .map_err(|error| GuardError::Link(format!("cannot write {ADDED_TO_LOOPBACK}: {error}")))
}

fn add(address: IpAddr, device: &str) -> Result<(), GuardError> {
    let prefix = host_prefix(address);
    let mut args = vec!["addr", "replace", &prefix, "dev", device];
    // Usable at once: duplicate address detection would hold it "tentative" for seconds.
    if address.is_ipv6() {
        args.push("nodad");
    }
    ip(&args)
}

/// `address` as a prefix of its own (`/32`, `/128`).
fn host_prefix(address: IpAddr) -> String {
    match address {
        IpAddr::V4(_) => format!("{address}/32"),
        IpAddr::V6(_) => format!("{address}/128"),
    }
}

/// Whether `ip -o addr show` output lists `address`.
fn holds(shown: &str, address: IpAddr) -> bool {
    let wanted = format!("{address}/");
    shown
        .split_whitespace()
        .any(|word| word.starts_with(&wanted))
}

fn link_exists() -> Result<bool, GuardError> {
    Ok(command(&["link", "show", LINK])?.status.success())
}

fn ip(args: &[&str]) -> Result<(), GuardError> {
    let done = command(args)?;
    if done.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&done.stderr).trim().to_owned();
    Err(GuardError::Link(format!(
        "ip {} failed: {said}",
        args.join(" ")
    )))
}

fn output(args: &[&str]) -> Result<String, GuardError> {
    let done = command(args)?;
    Ok(String::from_utf8_lossy(&done.stdout).into_owned())
}

fn command(args: &[&str]) -> Result<std::process::Output, GuardError> {
    Command::new("ip").args(args).output().map_err(|error| {
        let reason = match error.kind() {
            std::io::ErrorKind::NotFound => {
                "the ip program is missing: install the iproute2 package".to_owned()
            }
            _ => format!("cannot run ip: {error}"),
        };
        GuardError::Link(reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found_in_ip_output() {
        let shown = "1: lo    inet 127.0.0.1/8 scope host lo\n\
                     1: lo    inet 169.254.170.23/32 scope global lo\n\
                     1: lo    inet6 fd00:ec2::23/128 scope global nodad\n";
        assert!(holds(shown, "169.254.170.23".parse().unwrap()));
        assert!(holds(shown, "fd00:ec2::23".parse().unwrap()));
        assert!(
            !holds(shown, "169.254.170.2".parse().unwrap()),
            "not a prefix match"
        );
    }
}
