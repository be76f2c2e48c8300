//! The container addresses on the daemon's own link, with the `ip` program (iproute2), for the
//! same reasons the rules use `nft`: the reference tool, present wherever the rules are, and a
//! handful of idempotent commands.
//!
//! The link is a dummy interface (`assume-roled0`), as the EKS Pod Identity Agent makes for
//! 169.254.170.23: an address of this host that containers route to through their gateway, and
//! that needs no `route_localnet`. On a kernel without the dummy driver the addresses go on
//! loopback instead, which works the same for traffic arriving from a container's interface.

use std::net::IpAddr;
use std::process::Command;

use super::{GuardError, LINK};
use crate::config::CONTAINER_ADDRESSES;

/// Puts exactly `addresses` (container addresses) on the daemon's link, making the link if
/// needed; with none, deletes the link and takes container addresses off loopback.
pub fn set(addresses: &[IpAddr]) -> Result<(), GuardError> {
    if addresses.is_empty() {
        if link_exists()? {
            ip(&["link", "delete", LINK])?;
        }
        return remove_from("lo", &[]);
    }
    let device = if link_exists()? || ip(&["link", "add", LINK, "type", "dummy"]).is_ok() {
        ip(&["link", "set", LINK, "up"])?;
        LINK
    } else {
        "lo"
    };
    for address in addresses {
        let prefix = match address {
            IpAddr::V4(_) => format!("{address}/32"),
            IpAddr::V6(_) => format!("{address}/128"),
        };
        let mut args = vec!["addr", "replace", &prefix, "dev", device];
        // Usable at once: duplicate address detection would hold it "tentative" for seconds.
        if address.is_ipv6() {
            args.push("nodad");
        }
        ip(&args)?;
    }
    remove_from(device, addresses)
}

/// Takes the container addresses other than `kept` off `device`.
fn remove_from(device: &str, kept: &[IpAddr]) -> Result<(), GuardError> {
    let shown = output(&["-o", "addr", "show", "dev", device])?;
    for address in CONTAINER_ADDRESSES {
        if !kept.contains(&address) && holds(&shown, address) {
            let prefix = match address {
                IpAddr::V4(_) => format!("{address}/32"),
                IpAddr::V6(_) => format!("{address}/128"),
            };
            ip(&["addr", "del", &prefix, "dev", device])?;
        }
    }
    Ok(())
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
