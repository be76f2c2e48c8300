//! Who is on the other end of a loopback connection, from the kernel's own tables.
//!
//! For a connection accepted from `peer` on `local`, the client's socket is the one whose local
//! address is `peer` and whose remote address is `local`; the kernel names its owner (uid) and
//! inode. It is asked by an exact sock_diag request ([`crate::sockdiag`], microseconds); if
//! netlink is not permitted, the row is searched in `/proc/net/tcp` (or `tcp6`), which costs
//! time proportional to the host's whole TCP table. The process holding the inode is found by
//! scanning `/proc/<pid>/fd`, which only works for processes the daemon may see (under the
//! unit's `ProtectProc=invisible`, only its own): so uid is always known on loopback, pid and
//! executable only when visible. User and group names come from the name service
//! ([`accounts`]), cached per uid until `/etc/passwd` or `/etc/group` changes (looked at no
//! more than once a second) and for a minute at most. This is done once per connection, never
//! per request.
//!
//! Parsing is pure ([`find_socket`]); [`Resolver`] does the I/O.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::warn;

use crate::accounts;
use crate::sockdiag::{self, SocketRow};

/// What is known of a connection's client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// Names of the user's groups (primary and supplementary).
    pub groups: Vec<String>,
    pub pid: Option<u32>,
    pub exe: Option<String>,
    /// A container's connection (to the `[containers]` listener, from no socket of this
    /// host): its source address. Such a client has no local user.
    pub container: Option<std::net::IpAddr>,
}

impl Peer {
    /// The same client with the names the name service gives its user now.
    pub fn with_names(&self, names: Names) -> Self {
        Self {
            user: names.user,
            groups: names.groups,
            ..self.clone()
        }
    }

    /// A container connecting from `address`.
    pub fn container(address: std::net::IpAddr) -> Self {
        Self {
            container: Some(address),
            ..Self::default()
        }
    }
}

/// Where a connection's client's names come from while it is open: the resolver that found
/// them and its generation then (see [`Resolver::generation`]).
#[derive(Clone)]
pub struct NameSource {
    pub resolver: Arc<Resolver>,
    pub generation: u64,
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
    let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
    let row = SocketRow {
        uid: fields.get(7)?.parse().ok()?,
        inode: fields.get(9)?.parse().ok()?,
    };
    // A closed socket has no owner any more (uid 0, inode 0): no client, never root.
    sockdiag::is_live(state, row.inode).then_some(row)
}

/// What the kernel's tables say about a connection's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// A live socket of this host, and its owner.
    Found(SocketRow),
    /// No live local socket is connected from there: the client is gone, or is not on this
    /// host (127.0.0.1 reached from outside, as `route_localnet` allows).
    NotLocal,
    /// Neither sock_diag nor `/proc/net/tcp` could be asked.
    Unknown,
}

/// An address as `/proc/net/tcp{,6}` prints it: each 32-bit word of the address in host
/// (little-endian) byte order as upper-case hex, a colon, the port as four hex digits.
pub(crate) fn kernel_text(address: SocketAddr) -> String {
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

/// Looks connections' clients up, remembering user and group names between connections.
pub struct Resolver {
    with_process: bool,
    /// Cleared when sock_diag fails: from then on the slow `/proc/net/tcp` path is used.
    netlink_works: AtomicBool,
    /// `/etc/passwd` and `/etc/group` (other files in tests).
    account_files: [PathBuf; 2],
    /// [`ACCOUNTS_RECHECK`] (zero in tests).
    recheck: Duration,
    /// The name service ([`accounts`]; a stand-in in tests).
    resolve_names: fn(u32) -> Names,
    names: Mutex<NameCache>,
    /// See [`Resolver::generation`].
    generation: std::sync::atomic::AtomicU64,
    /// Whether a [`Resolver::keep_fresh`] task runs.
    keeping_fresh: AtomicBool,
    /// Lookups that may block (name service, `/proc` scans) run on blocking threads, a few at
    /// a time: a flood of new connections must not run hundreds of them side by side.
    slow_lookups: Semaphore,
}

/// How often the account files' modification times are looked at: a local membership change
/// takes effect within this, and a flood of new connections does not `stat` twice each.
const ACCOUNTS_RECHECK: Duration = Duration::from_secs(1);
/// How long names are kept at most: a change in a directory service (SSSD, LDAP) leaves no
/// trace in the local files, so it takes effect within this.
const NAMES_MAX_AGE: Duration = Duration::from_secs(60);
/// The most uids whose names are looked up again when the names are refreshed; past it they
/// are forgotten (and looked up again as their connections ask).
const MAX_REFRESHED_UIDS: usize = 4096;
/// Blocking lookups running at once.
const CONCURRENT_SLOW_LOOKUPS: usize = 2;

/// Names by uid, valid while `/etc/passwd` and `/etc/group` keep the modification times
/// `stamp` (tools like `usermod` replace the files, so a membership change is seen) and for
/// [`NAMES_MAX_AGE`] at most.
#[derive(Default)]
struct NameCache {
    stamp: [Option<SystemTime>; 2],
    checked: Option<Instant>,
    emptied: Option<Instant>,
    by_uid: HashMap<u32, Names>,
}

/// A user's name and groups, as the name service says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    user: Option<String>,
    groups: Vec<String>,
}

impl Resolver {
    /// `with_process` also finds each client's pid and executable, by scanning the file
    /// descriptors of every visible process: far costlier than the rest, so it is optional.
    pub fn new(with_process: bool) -> Self {
        Self {
            with_process,
            netlink_works: AtomicBool::new(true),
            account_files: [accounts::PASSWD.into(), accounts::GROUP.into()],
            recheck: ACCOUNTS_RECHECK,
            resolve_names: names_from_service,
            names: Mutex::new(NameCache::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
            keeping_fresh: AtomicBool::new(false),
            slow_lookups: Semaphore::new(CONCURRENT_SLOW_LOOKUPS),
        }
    }

    /// The client of a connection from `client` to `server`; `None` when no live socket of
    /// this host is its other end (the client is gone, or is not local: refuse it). The usual
    /// case (sock_diag, names known) takes microseconds and runs where it is called; anything
    /// that may block (a name not yet known, the `/proc` fallback, the process scan) runs on a
    /// blocking thread.
    pub async fn identify(
        self: &Arc<Self>,
        client: SocketAddr,
        server: SocketAddr,
    ) -> Option<Peer> {
        if self.with_process || !self.netlink_works.load(Ordering::Relaxed) {
            let this = self.clone();
            return self
                .off_runtime(move || this.lookup(client, server))
                .await
                .unwrap_or(Some(Peer::default()));
        }
        let row = match self.client_socket(client, server) {
            Client::Found(row) => row,
            Client::NotLocal => return None,
            Client::Unknown => return Some(Peer::default()),
        };
        let names = match self.cached_names(row.uid) {
            Some(names) => names,
            None => {
                let this = self.clone();
                self.off_runtime(move || this.names_of(row.uid))
                    .await
                    .unwrap_or_default()
            }
        };
        Some(Peer {
            uid: Some(row.uid),
            user: names.user,
            groups: names.groups,
            pid: None,
            exe: None,
            container: None,
        })
    }

    async fn off_runtime<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _slot = self.slow_lookups.acquire().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }

    /// The whole lookup, blocking; `None` when the client is no live local socket.
    fn lookup(&self, client: SocketAddr, server: SocketAddr) -> Option<Peer> {
        let row = match self.client_socket(client, server) {
            Client::Found(row) => row,
            Client::NotLocal => return None,
            Client::Unknown => return Some(Peer::default()),
        };
        let names = self.names_of(row.uid);
        let pid = self
            .with_process
            .then(|| owner_of_socket(row.inode))
            .flatten();
        let exe = pid
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
            .map(|path| path.to_string_lossy().into_owned());
        Some(Peer {
            uid: Some(row.uid),
            user: names.user,
            groups: names.groups,
            pid,
            exe,
            container: None,
        })
    }

    /// The client's socket, from the kernel by sock_diag, else from `/proc/net/tcp{,6}`.
    fn client_socket(&self, client: SocketAddr, server: SocketAddr) -> Client {
        if self.netlink_works.load(Ordering::Relaxed) {
            match sockdiag::query(client, server) {
                Ok(row) => return row.map_or(Client::NotLocal, Client::Found),
                Err(error) if sockdiag::is_unavailable(&error) => {
                    self.netlink_works.store(false, Ordering::Relaxed);
                    warn!(%error, "sock_diag is unavailable (is AF_NETLINK allowed?); reading \
                        /proc/net/tcp from now on, which is slower on busy hosts");
                }
                Err(error) => warn!(%error, "sock_diag failed; reading /proc/net/tcp this time"),
            }
        }
        proc_table_socket(client, server)
    }

    /// The names of `uid` if known.
    pub fn cached_names(&self, uid: u32) -> Option<Names> {
        self.cache().by_uid.get(&uid).cloned()
    }

    /// The names of `uid`, asking the name service (blocking) if they are not known.
    fn names_of(&self, uid: u32) -> Names {
        if let Some(names) = self.cached_names(uid) {
            return names;
        }
        // Asked without holding the lock: the name service may be slow. A refresh that
        // happened meanwhile may know better: what was asked before it is not cached.
        let generation = self.generation();
        let names = (self.resolve_names)(uid);
        let mut cache = self.cache();
        if self.generation() == generation {
            cache.by_uid.insert(uid, names.clone());
        }
        names
    }

    /// The generation of the names: bumped each time they were looked up afresh. A connection
    /// whose user was looked up under an older one takes its user's names again (the server's
    /// connection service does, before each request): a user removed from a group loses what
    /// the group gave on the next request of an open connection too.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// When the account files changed (looked at no more than once a `recheck`) or the names
    /// are a minute old: looks every known uid up again (blocking: the name service), then
    /// bumps the generation. Whether it did.
    pub fn refresh_if_due(&self) -> bool {
        // Uids with an account only: those without one (a flood of subordinate uids, say) are
        // forgotten, and looked up again when they connect.
        let known: Vec<u32> = {
            let mut cache = self.cache();
            if !self.due(&mut cache) {
                return false;
            }
            (cache.by_uid.iter())
                .filter(|(_, names)| names.user.is_some())
                .map(|(uid, _)| *uid)
                .collect()
        };
        // Too many to look up again: forget them; a connection of a forgotten uid looks its
        // names up again itself.
        let fresh: HashMap<u32, Names> = if known.len() > MAX_REFRESHED_UIDS {
            HashMap::new()
        } else {
            known
                .into_iter()
                .map(|uid| (uid, (self.resolve_names)(uid)))
                .collect()
        };
        self.cache().by_uid = fresh;
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Calls [`Self::refresh_if_due`] every [`ACCOUNTS_RECHECK`] on a blocking thread, until
    /// `stop`. Once per resolver, however many listeners share it.
    pub async fn keep_fresh(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if self.keeping_fresh.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut tick = tokio::time::interval(ACCOUNTS_RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let this = self.clone();
                    self.off_runtime(move || this.refresh_if_due()).await;
                }
                () = stop.cancelled() => return,
            }
        }
    }

    /// The names of `uid` now, for a connection whose names are of an older generation:
    /// cached, else asked of the name service off the runtime.
    pub async fn current_names(self: &Arc<Self>, uid: u32) -> Names {
        if let Some(names) = self.cached_names(uid) {
            return names;
        }
        let this = self.clone();
        self.off_runtime(move || this.names_of(uid))
            .await
            .unwrap_or_default()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, NameCache> {
        self.names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the names are to be looked up afresh: the local account files changed, or the
    /// names are too old. Looks at the files no more than once a `recheck`.
    fn due(&self, cache: &mut NameCache) -> bool {
        let now = Instant::now();
        let look = cache
            .checked
            .is_none_or(|at| now.duration_since(at) >= self.recheck);
        if !look {
            return false;
        }
        cache.checked = Some(now);
        let [passwd, group] = &self.account_files;
        let stamp = [modified(passwd), modified(group)];
        let too_old = cache
            .emptied
            .is_none_or(|at| now.duration_since(at) >= NAMES_MAX_AGE);
        if cache.stamp == stamp && !too_old {
            return false;
        }
        cache.stamp = stamp;
        cache.emptied = Some(now);
        true
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn names_from_service(uid: u32) -> Names {
    match accounts::user(uid) {
        Some((name, gid)) => Names {
            groups: accounts::groups_of(&name, gid),
            user: Some(name),
        },
        None => Names::default(),
    }
}

/// The client's row in `/proc/net/tcp`, or for a dual-stack client of an IPv4 listener (a
/// JVM's socket) in `/proc/net/tcp6`, where it is listed with IPv4-mapped addresses.
fn proc_table_socket(client: SocketAddr, server: SocketAddr) -> Client {
    let mut tables = vec![(
        "/proc/net/tcp6",
        sockdiag::mapped(client),
        sockdiag::mapped(server),
    )];
    if client.is_ipv4() {
        tables.insert(0, ("/proc/net/tcp", client, server));
    }
    let mut read_any = false;
    for (table, client, server) in tables {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        read_any = true;
        if let Some(row) = find_socket(&text, client, server) {
            return Client::Found(row);
        }
    }
    if read_any {
        Client::NotLocal
    } else {
        Client::Unknown
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

    /// The stand-in name service's answer for uid 1001: in group ops until `LEFT_OPS`.
    static LEFT_OPS: AtomicBool = AtomicBool::new(false);

    fn stand_in_names(uid: u32) -> Names {
        names_in_ops_until((1001, "alice"), uid, &LEFT_OPS)
    }

    /// The names a stand-in name service gives `uid`: `user`'s, in its own group and in `ops`
    /// until `left` is set; no account for any other uid.
    fn names_in_ops_until((user_uid, user): (u32, &str), uid: u32, left: &AtomicBool) -> Names {
        let mut groups = vec![user.to_owned()];
        if !left.load(Ordering::SeqCst) {
            groups.push("ops".to_owned());
        }
        Names {
            user: (uid == user_uid).then(|| user.to_owned()),
            groups,
        }
    }

    /// Removing a user from a group takes effect when the account files change, not at restart:
    /// the names are looked up again and the generation moves on (open connections follow it).
    #[test]
    fn names_are_cached_until_the_account_files_change() {
        let dir = std::env::temp_dir().join(format!("assume-roled-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (passwd, group) = (dir.join("passwd"), dir.join("group"));
        std::fs::write(&passwd, "alice:x:1001:1001::/home/alice:/bin/sh\n").unwrap();
        std::fs::write(&group, "alice:x:1001:\nops:x:1500:alice\n").unwrap();
        let resolver = Resolver {
            account_files: [passwd.clone(), group.clone()],
            recheck: Duration::ZERO,
            resolve_names: stand_in_names,
            ..Resolver::new(false)
        };
        assert_eq!(resolver.cached_names(1001), None);
        assert!(resolver.refresh_if_due(), "the first look stamps the files");
        assert_eq!(resolver.names_of(1001).groups, ["alice", "ops"]);
        let generation = resolver.generation();
        LEFT_OPS.store(true, Ordering::SeqCst);
        assert!(!resolver.refresh_if_due(), "the files are unchanged");
        assert_eq!(
            resolver.cached_names(1001).unwrap().groups,
            ["alice", "ops"],
            "cached while the files are unchanged"
        );
        assert_eq!(resolver.generation(), generation);
        // A new file with a later modification time, as usermod writes it (set explicitly:
        // a coarse file-system clock could give it the old one).
        std::fs::write(&group, "alice:x:1001:\nops:x:1500:\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&group)
            .and_then(|file| file.set_modified(later))
            .unwrap();
        assert!(resolver.refresh_if_due(), "the group file changed");
        assert_eq!(
            resolver.cached_names(1001).unwrap().groups,
            ["alice"],
            "looked up again, not just forgotten: open connections find them"
        );
        assert_eq!(resolver.generation(), generation + 1);
        assert_eq!(resolver.names_of(4242).user, None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Whether bob has left `ops` in the directory service (no trace in the local files).
    static BOB_LEFT_OPS: AtomicBool = AtomicBool::new(false);

    fn directory_names(uid: u32) -> Names {
        names_in_ops_until((1002, "bob"), uid, &BOB_LEFT_OPS)
    }

    /// A change in a directory service leaves the local account files alone: it is seen when
    /// the names are a minute old, not before.
    #[tokio::test(start_paused = true)]
    async fn names_are_looked_up_again_after_a_minute() {
        let dir = std::env::temp_dir().join(format!("assume-roled-age-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (passwd, group) = (dir.join("passwd"), dir.join("group"));
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(&group, "root:x:0:\n").unwrap();
        let resolver = Resolver {
            account_files: [passwd, group],
            recheck: Duration::ZERO,
            resolve_names: directory_names,
            ..Resolver::new(false)
        };
        assert!(resolver.refresh_if_due(), "the first look");
        assert_eq!(resolver.names_of(1002).groups, ["bob", "ops"]);
        let generation = resolver.generation();
        BOB_LEFT_OPS.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!resolver.refresh_if_due(), "younger than a minute");
        assert_eq!(resolver.cached_names(1002).unwrap().groups, ["bob", "ops"]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(resolver.refresh_if_due(), "a minute old");
        assert_eq!(resolver.cached_names(1002).unwrap().groups, ["bob"]);
        assert_eq!(resolver.generation(), generation + 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn looks_up_a_real_connection_of_this_process() {
        let connection = crate::fake::LoopbackConnection::open();
        let (peer, server) = (connection.client, connection.server);
        let found = Resolver::new(true)
            .lookup(peer, server)
            .expect("a local client");
        assert_eq!(Resolver::new(false).lookup(peer, server).unwrap().pid, None);
        let Client::Found(row) = proc_table_socket(peer, server) else {
            panic!("the /proc table has the client");
        };
        assert_eq!(Some(row.uid), found.uid);
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

    /// A dual-stack client's row (a JVM's socket) is listed in `tcp6`, with mapped addresses.
    #[test]
    fn finds_a_dual_stack_client_in_tcp6() {
        let row = "   0: 0000000000000000FFFF00000100007F:C060 0000000000000000FFFF00000100007F:8CD3 01 00000000:00000000 00:00000000 00000000  1003        0 3859 2";
        let client = sockdiag::mapped("127.0.0.1:49248".parse().unwrap());
        let server = sockdiag::mapped("127.0.0.1:36051".parse().unwrap());
        assert_eq!(
            find_socket(row, client, server),
            Some(SocketRow {
                uid: 1003,
                inode: 3859
            })
        );
    }

    /// Where netlink is refused, the same client is found in `/proc/net/tcp`.
    #[test]
    fn without_netlink_the_proc_table_answers() {
        let connection = crate::fake::LoopbackConnection::open();
        let fallback = Resolver {
            netlink_works: AtomicBool::new(false),
            ..Resolver::new(false)
        };
        let (client, server) = (connection.client, connection.server);
        let found = fallback.lookup(client, server).expect("a local client");
        assert!(found.uid.is_some());
        assert_eq!(Some(found), Resolver::new(false).lookup(client, server));
    }

    /// A JVM's dual-stack socket on an IPv4 listener is found both ways: by sock_diag and, in
    /// the fallback, in `/proc/net/tcp6`.
    #[test]
    fn finds_a_dual_stack_client_both_ways() {
        let connection = crate::fake::LoopbackConnection::open_dual_stack();
        let (client, server) = (connection.client, connection.server);
        let Client::Found(row) = proc_table_socket(client, server) else {
            panic!("the /proc tables have the dual-stack client");
        };
        let found = Resolver::new(false)
            .lookup(client, server)
            .expect("a local client");
        assert_eq!(found.uid, Some(row.uid));
        let fallback = Resolver {
            netlink_works: AtomicBool::new(false),
            ..Resolver::new(true)
        };
        let found = fallback.lookup(client, server).expect("a local client");
        assert_eq!(found.pid, Some(std::process::id()));
    }

    /// A connection whose client socket is gone (or was never on this host) has no client:
    /// sock_diag and the /proc table say so alike, and the lookup says refuse.
    #[test]
    fn a_closed_client_is_no_client() {
        let connection = crate::fake::LoopbackConnection::open();
        let (client, server) = (connection.client, connection.server);
        drop(connection);
        assert_eq!(Resolver::new(false).lookup(client, server), None);
        assert_eq!(proc_table_socket(client, server), Client::NotLocal);
        let stranger: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(Resolver::new(false).lookup(stranger, server), None);
    }
}
