//! Who is on the other end of a loopback connection, from the kernel's own tables.
//!
//! For a connection accepted from `peer` on `local`, the client's socket is the row of
//! `/proc/net/tcp` (or `tcp6`) whose local address is `peer` and whose remote address is
//! `local`; that row names the socket's owner (uid) and inode. The process holding the inode
//! is found by scanning `/proc/<pid>/fd`, which only works for processes the daemon may see
//! (under the unit's `ProtectProc=invisible`, only its own): so uid is always known on
//! loopback, pid and executable only when visible. User and group names come from
//! `/etc/passwd` and `/etc/group`. This is done once per connection, never per request.
//!
//! Parsing is pure ([`find_socket`], and [`accounts`] for names); [`lookup`] does the I/O.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::accounts;

/// What is known of a connection's client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// Names of the user's groups (primary and supplementary).
    pub groups: Vec<String>,
    pub pid: Option<u32>,
    pub exe: Option<String>,
}

/// Shows an optional value in a log field, `-` when unknown.
pub struct Known<'a, T>(pub &'a Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for Known<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// A row of `/proc/net/tcp{,6}`: the socket's owner and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketRow {
    pub uid: u32,
    pub inode: u64,
}

/// Finds the socket whose local address is `client` and remote address is `server` in the
/// text of `/proc/net/tcp` or `/proc/net/tcp6`. The table can hold tens of thousands of rows
/// (connections in TIME_WAIT), so the pair is searched as the kernel prints it, in one pass,
/// and only the matching row is split into fields.
pub fn find_socket(table: &str, client: SocketAddr, server: SocketAddr) -> Option<SocketRow> {
    let needle = format!(" {} {} ", kernel_text(client), kernel_text(server));
    let start = table.find(&needle)?;
    let line_start = table[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = table[start..].find('\n').map_or(table.len(), |i| start + i);
    let fields: Vec<&str> = table[line_start..line_end].split_whitespace().collect();
    Some(SocketRow {
        uid: fields.get(7)?.parse().ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// An address as `/proc/net/tcp{,6}` prints it: each 32-bit word of the address in host
/// (little-endian) byte order as upper-case hex, a colon, the port as four hex digits.
fn kernel_text(address: SocketAddr) -> String {
    let words: Vec<String> = match address.ip() {
        IpAddr::V4(ip) => vec![format!("{:08X}", u32::from_le_bytes(ip.octets()))],
        IpAddr::V6(ip) => ip
            .octets()
            .chunks_exact(4)
            .map(|word| {
                format!(
                    "{:08X}",
                    u32::from_le_bytes(word.try_into().expect("4 bytes"))
                )
            })
            .collect(),
    };
    format!("{}:{:04X}", words.concat(), address.port())
}

/// Looks the client of a connection up (blocking file reads: call it off the async runtime).
/// `with_process` also finds its pid and executable, by scanning the file descriptors of every
/// visible process: far costlier than the rest, so it is optional.
pub fn lookup(client: SocketAddr, server: SocketAddr, with_process: bool) -> Peer {
    let table = if client.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let Some(row) = std::fs::read_to_string(table)
        .ok()
        .and_then(|text| find_socket(&text, client, server))
    else {
        return Peer::default();
    };
    let passwd = accounts::read(accounts::PASSWD);
    let (user, groups) = match accounts::user_name(&passwd, row.uid) {
        Some((name, gid)) => {
            let groups = accounts::groups_of(&accounts::read(accounts::GROUP), &name, gid);
            (Some(name), groups)
        }
        None => (None, Vec::new()),
    };
    let pid = with_process.then(|| owner_of_socket(row.inode)).flatten();
    let exe = pid
        .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
        .map(|path| path.to_string_lossy().into_owned());
    Peer {
        uid: Some(row.uid),
        user,
        groups,
        pid,
        exe,
    }
}

/// The first visible process with a file descriptor on socket `inode`.
fn owner_of_socket(inode: u64) -> Option<u32> {
    let target = PathBuf::from(format!("socket:[{inode}]"));
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link == target))
                .then_some(pid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2475 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:2475 01 00000000:00000000 00:00000000 00000000  1001        0 2222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:2475 0100007F:C350 01 00000000:00000000 00:00000000 00000000   998        0 3333 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn finds_the_client_socket_not_the_server_side() {
        let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:9333".parse().unwrap();
        assert_eq!(
            find_socket(TCP, client, server),
            Some(SocketRow {
                uid: 1001,
                inode: 2222
            })
        );
        assert_eq!(
            find_socket(TCP, server, "127.0.0.1:1".parse().unwrap()),
            None
        );
    }

    #[test]
    fn parses_ipv6_rows() {
        let row = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:C350 00000000000000000000000001000000:2475 01 00000000:00000000 00:00000000 00000000  1002        0 4444 1";
        let client: SocketAddr = "[::1]:50000".parse().unwrap();
        let server: SocketAddr = "[::1]:9333".parse().unwrap();
        assert_eq!(
            find_socket(row, client, server),
            Some(SocketRow {
                uid: 1002,
                inode: 4444
            })
        );
    }

    #[test]
    fn looks_up_a_real_connection_of_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let found = lookup(peer, server, true);
        assert_eq!(lookup(peer, server, false).pid, None);
        let own_uid = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
        assert_eq!(found.uid, own_uid);
        assert_eq!(found.pid, Some(std::process::id()));
        let own_exe = std::env::current_exe().unwrap();
        assert_eq!(found.exe, Some(own_exe.to_string_lossy().into_owned()));
    }
}
