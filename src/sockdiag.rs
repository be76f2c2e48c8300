//! One TCP socket's owner, asked of the kernel directly (`NETLINK_SOCK_DIAG`, as `ss` does).
//!
//! `/proc/net/tcp` prints every TCP socket of the host, so reading it costs time proportional to
//! the table (milliseconds with thousands of connections in TIME_WAIT). An exact sock_diag
//! request names the socket by its four addresses and the kernel answers from its hash table,
//! in microseconds, whatever the table size. Encoding the request and decoding the answer are
//! pure ([`request`], [`parse_reply`]); [`query`] does the one round trip.
//!
//! Layouts (`linux/netlink.h`, `linux/inet_diag.h`), all in host byte order except ports and
//! addresses, which are in network order:
//! `nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid }` (16 bytes), then
//! `inet_diag_req_v2 { u8 family, protocol, ext, pad; u32 states; inet_diag_sockid id }`
//! with `inet_diag_sockid { be16 sport, dport; be32 src[4], dst[4]; u32 if; u32 cookie[2] }`;
//! the answer's `inet_diag_msg { u8 family, state, timer, retrans; inet_diag_sockid id;
//! u32 expires, rqueue, wqueue, uid, inode }`.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// A client socket as the kernel describes it: its owner and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketRow {
    pub uid: u32,
    pub inode: u64,
}

const AF_NETLINK: i32 = 16;
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
/// `INET_DIAG_NOCOOKIE`: match whatever the socket's cookie.
const NO_COOKIE: u32 = u32::MAX;
const HEADER_LEN: usize = 16;
const REQUEST_LEN: usize = HEADER_LEN + 56;
/// Where `uid` and `inode` sit in `inet_diag_msg`.
const UID_OFFSET: usize = 64;
const INODE_OFFSET: usize = 68;
/// The kernel answers an exact request at once; a stuck answer must not hold a connection.
const REPLY_TIMEOUT: Duration = Duration::from_millis(200);

/// The exact-lookup request for the socket whose local address is `local` and remote address
/// is `remote`.
pub fn request(local: SocketAddr, remote: SocketAddr, sequence: u32) -> Vec<u8> {
    let mut message = Vec::with_capacity(REQUEST_LEN);
    message.extend_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    message.extend_from_slice(&sequence.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
    message.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    message.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    message.extend_from_slice(&local.port().to_be_bytes());
    message.extend_from_slice(&remote.port().to_be_bytes());
    message.extend_from_slice(&address_words(local.ip()));
    message.extend_from_slice(&address_words(remote.ip()));
    message.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    message.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    message.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    debug_assert_eq!(message.len(), REQUEST_LEN);
    message
}

/// An address as `inet_diag_sockid` holds it: 16 bytes, network order, IPv4 in the first four.
fn address_words(ip: IpAddr) -> [u8; 16] {
    let mut words = [0; 16];
    match ip {
        IpAddr::V4(v4) => words[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => words.copy_from_slice(&v6.octets()),
    }
    words
}

/// TCP states (`linux/tcp_states.h`) in which a client's socket is still open and owned: it is
/// connected, or has only half-closed. A closed socket (TIME_WAIT, CLOSE) has no owner any more
/// (the kernel says uid 0, inode 0), and must not be taken for root.
const LIVE_STATES: &[u8] = &[
    1,  // ESTABLISHED
    4,  // FIN_WAIT1
    5,  // FIN_WAIT2
    8,  // CLOSE_WAIT
    9,  // LAST_ACK
    11, // CLOSING
];
/// Where `state` and the socket id (ports, addresses) sit in `inet_diag_msg`.
const STATE_OFFSET: usize = 1;
const ID_OFFSET: usize = 4;
/// Where the socket id sits in the request, and its length (ports and addresses).
const REQUEST_ID_OFFSET: usize = HEADER_LEN + 8;
const ID_LEN: usize = 36;

/// The socket id (ports and addresses) a request asks about, as an answer must repeat it.
pub fn asked_id(request: &[u8]) -> &[u8] {
    &request[REQUEST_ID_OFFSET..REQUEST_ID_OFFSET + ID_LEN]
}

/// Whether the socket id `answered` names the socket `asked` named. A dual-stack client (every
/// JVM, by default) connecting to an IPv4 address has an IPv6 socket whose addresses are the
/// IPv4-mapped `::ffff:a.b.c.d`: the kernel finds it for a question about the IPv4 pair (IPv4
/// and mapped sockets share one connection table, so the four addresses name one socket) and
/// answers with the mapped form.
pub fn same_socket(answered: &[u8], asked: &[u8]) -> bool {
    let ports = 0..4;
    let addresses = |id: &[u8]| [unmapped(&id[4..20]), unmapped(&id[20..36])];
    answered.len() == ID_LEN
        && asked.len() == ID_LEN
        && answered[ports.clone()] == asked[ports]
        && addresses(answered) == addresses(asked)
}

/// An address as `inet_diag_sockid` holds it, with an IPv4-mapped IPv6 address written as the
/// IPv4 address it maps (IPv4 in the first four bytes, the rest zero).
fn unmapped(words: &[u8]) -> [u8; 16] {
    let mut address: [u8; 16] = words.try_into().expect("16 bytes");
    if address[..10] == [0; 10] && address[10..12] == [0xff, 0xff] {
        let v4: [u8; 4] = address[12..].try_into().expect("4 bytes");
        address = [0; 16];
        address[..4].copy_from_slice(&v4);
    }
    address
}

/// `address` as a dual-stack socket names an IPv4 peer (`::ffff:a.b.c.d`); IPv6 as it is.
pub fn mapped(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        v6 => v6,
    }
}

/// Whether a socket in TCP state `state` with `inode` is a live, owned socket.
pub fn is_live(state: u8, inode: u64) -> bool {
    LIVE_STATES.contains(&state) && inode != 0
}

/// The socket's owner and inode from the kernel's answer to the question about socket id
/// `asked` ([`asked_id`]); `Ok(None)` when the kernel knows no such socket, or none that is
/// still open and owned, or answers about another one.
pub fn parse_reply(reply: &[u8], asked: &[u8]) -> io::Result<Option<SocketRow>> {
    let found = parse_any(reply, asked)?;
    Ok(found.and_then(|(state, row)| is_live(state, row.inode).then_some(row)))
}

/// The socket the kernel answered about (its TCP state and row), if it is the one `asked`
/// about, whatever its state: a connection not accepted yet has no inode, but its owner
/// (the listener's) is known.
fn parse_any(reply: &[u8], asked: &[u8]) -> io::Result<Option<(u8, SocketRow)>> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag answer");
    let word = |at: usize| -> io::Result<u32> {
        let bytes = reply.get(at..at + 4).ok_or_else(malformed)?;
        Ok(u32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
    };
    let kind = u16::from_ne_bytes(reply.get(4..6).ok_or_else(malformed)?.try_into().unwrap());
    match kind {
        NLMSG_ERROR => {
            let errno = word(HEADER_LEN)? as i32;
            // ENOENT: no such socket.
            if errno == -2 {
                Ok(None)
            } else {
                Err(io::Error::from_raw_os_error(-errno))
            }
        }
        SOCK_DIAG_BY_FAMILY => {
            let message = HEADER_LEN;
            let state = *reply.get(message + STATE_OFFSET).ok_or_else(malformed)?;
            let row = SocketRow {
                uid: word(message + UID_OFFSET)?,
                inode: u64::from(word(message + INODE_OFFSET)?),
            };
            let start = message + ID_OFFSET;
            let answered = reply.get(start..start + ID_LEN).ok_or_else(malformed)?;
            Ok(same_socket(answered, asked).then_some((state, row)))
        }
        _ => Err(malformed()),
    }
}

thread_local! {
    /// Each thread keeps its netlink socket (and a sequence number) between lookups: opening
    /// and closing one per connection would cost as much as the question itself.
    static CHANNEL: RefCell<Option<(Socket, u32)>> = const { RefCell::new(None) };
}

/// Asks the kernel who owns the TCP socket from `local` to `remote` (a blocking round trip of
/// microseconds). A failed exchange is retried once on a fresh socket; see [`is_unavailable`]
/// for errors that will not go away.
pub fn query(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<SocketRow>> {
    CHANNEL.with_borrow_mut(|channel| {
        let first = exchange(channel, local, remote);
        if first.is_ok() {
            return first;
        }
        // A late answer could still arrive on that socket: ask again on a new one.
        *channel = None;
        let second = exchange(channel, local, remote);
        if second.is_err() {
            *channel = None;
        }
        second
    })
}

/// One question on the thread's socket, opened if there is none.
fn exchange(
    channel: &mut Option<(Socket, u32)>,
    local: SocketAddr,
    remote: SocketAddr,
) -> io::Result<Option<SocketRow>> {
    let (socket, sequence) = match channel {
        Some(open) => open,
        None => channel.insert((open()?, 0)),
    };
    *sequence = sequence.wrapping_add(1);
    round_trip(socket, local, remote, *sequence)
}

/// Whether `error` means this process may not use sock_diag at all (netlink not permitted by
/// the sandbox, or not built into the kernel), rather than one failed exchange.
pub fn is_unavailable(error: &io::Error) -> bool {
    const EPERM: i32 = 1;
    const EACCES: i32 = 13;
    const EPROTONOSUPPORT: i32 = 93;
    const EAFNOSUPPORT: i32 = 97;
    matches!(
        error.raw_os_error(),
        Some(EPERM | EACCES | EPROTONOSUPPORT | EAFNOSUPPORT)
    )
}

fn open() -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_SOCK_DIAG)),
    )?;
    socket.set_read_timeout(Some(REPLY_TIMEOUT))?;
    Ok(socket)
}

/// Who owns the server side of this process's own connection to `server` from `client`
/// (the uid the kernel gives the listener's sockets), accepted yet or not: what a client asks
/// before it sends a secret. A socket of its own, asked once.
pub fn server_owner(server: SocketAddr, client: SocketAddr) -> io::Result<Option<u32>> {
    let socket = open()?;
    let question = request(server, client, 1);
    let reply = exchange_raw(&socket, &question, 1)?;
    Ok(parse_any(&reply, asked_id(&question))?.map(|(_, row)| row.uid))
}

fn round_trip(
    socket: &Socket,
    local: SocketAddr,
    remote: SocketAddr,
    sequence: u32,
) -> io::Result<Option<SocketRow>> {
    let question = request(local, remote, sequence);
    let reply = exchange_raw(socket, &question, sequence)?;
    parse_reply(&reply, asked_id(&question))
}

/// Sends `question` and reads the kernel's answer to it (numbered `sequence`).
fn exchange_raw(socket: &Socket, question: &[u8], sequence: u32) -> io::Result<Vec<u8>> {
    (&*socket).write_all(question)?;
    let mut reply = [0u8; 512];
    let length = (&*socket).read(&mut reply)?;
    let reply = &reply[..length];
    if reply.get(8..12) != Some(&sequence.to_ne_bytes()[..]) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "sock_diag answered another question",
        ));
    }
    Ok(reply.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only errors that say sock_diag can never work here switch the lookup to `/proc`; a
    /// failed exchange (interrupted, out of buffers, would block) does not.
    #[test]
    fn unavailable_means_not_permitted_or_not_built_in() {
        let errno = |code| io::Error::from_raw_os_error(code);
        for never in [1, 13, 93, 97] {
            assert!(is_unavailable(&errno(never)), "{never}");
        }
        for once in [4, 11, 105, 111] {
            assert!(!is_unavailable(&errno(once)), "{once}");
        }
        assert!(!is_unavailable(&io::Error::other("short reply")));
    }

    #[test]
    fn request_layout() {
        let local: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let remote: SocketAddr = "127.0.0.1:9357".parse().unwrap();
        let message = request(local, remote, 7);
        assert_eq!(message.len(), 72);
        assert_eq!(&message[0..4], &72u32.to_ne_bytes());
        assert_eq!(&message[4..6], &20u16.to_ne_bytes());
        assert_eq!(&message[8..12], &7u32.to_ne_bytes());
        assert_eq!(&message[16..18], &[AF_INET, IPPROTO_TCP]);
        assert_eq!(&message[24..26], &50000u16.to_be_bytes());
        assert_eq!(&message[26..28], &9357u16.to_be_bytes());
        assert_eq!(&message[28..32], &[127, 0, 0, 1]);
        assert_eq!(&message[44..48], &[127, 0, 0, 1]);
        assert_eq!(&message[64..72], &[0xff; 8]);
        let v6 = request("[::1]:1".parse().unwrap(), "[::1]:2".parse().unwrap(), 1);
        assert_eq!(v6[16], AF_INET6);
        assert_eq!(v6[43], 1, "::1 ends in 1");
    }

    /// The socket id a question about `local` and `remote` asks.
    fn id(local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
        asked_id(&request(local, remote, 1)).to_vec()
    }

    /// A client's address and the listener's, as the questions name them.
    fn client_and_server() -> (SocketAddr, SocketAddr) {
        (
            "127.0.0.1:50000".parse().unwrap(),
            "127.0.0.1:9357".parse().unwrap(),
        )
    }

    /// A reply about the socket from `local` to `remote`, in TCP `state`.
    fn reply(local: SocketAddr, remote: SocketAddr, state: u8, uid: u32, inode: u32) -> Vec<u8> {
        let mut found = vec![0u8; HEADER_LEN + 72];
        found[8..12].copy_from_slice(&1u32.to_ne_bytes());
        found[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        found[HEADER_LEN] = AF_INET;
        found[HEADER_LEN + 1] = state;
        // The socket id as the request carries it (at 8 in the request, at 4 in the answer).
        let question = request(local, remote, 1);
        found[HEADER_LEN + ID_OFFSET..HEADER_LEN + ID_OFFSET + ID_LEN]
            .copy_from_slice(asked_id(&question));
        found[HEADER_LEN + 64..HEADER_LEN + 68].copy_from_slice(&uid.to_ne_bytes());
        found[HEADER_LEN + 68..HEADER_LEN + 72].copy_from_slice(&inode.to_ne_bytes());
        found
    }

    #[test]
    fn replies() {
        let (local, remote) = client_and_server();
        let found = reply(local, remote, 1, 1001, 4242);
        let row = parse_reply(&found, &id(local, remote)).unwrap().unwrap();
        assert_eq!((row.uid, row.inode), (1001, 4242));
        let half_closed = reply(local, remote, 5, 1001, 4242);
        assert!(
            parse_reply(&half_closed, &id(local, remote))
                .unwrap()
                .is_some()
        );

        let mut error = vec![0u8; HEADER_LEN + 4];
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[HEADER_LEN..].copy_from_slice(&(-2i32).to_ne_bytes());
        assert!(parse_reply(&error, &id(local, remote)).unwrap().is_none());
        error[HEADER_LEN..].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(
            parse_reply(&error, &id(local, remote))
                .unwrap_err()
                .raw_os_error(),
            Some(1)
        );
        assert!(
            parse_reply(&found[..40], &id(local, remote)).is_err(),
            "truncated"
        );
    }

    /// The kernel's answer about a dual-stack client (a JVM's socket) to a question about the
    /// IPv4 pair the listener sees: an AF_INET6 socket with IPv4-mapped addresses. It is the
    /// asked socket; a mapped address of another host or port is not.
    #[test]
    fn a_mapped_reply_names_the_asked_ipv4_socket() {
        let (local, remote) = client_and_server();
        let mut answer = reply(mapped(local), mapped(remote), 1, 1004, 5151);
        answer[HEADER_LEN] = AF_INET6;
        let row = parse_reply(&answer, &id(local, remote)).unwrap();
        assert_eq!(
            row,
            Some(SocketRow {
                uid: 1004,
                inode: 5151
            })
        );
        let elsewhere: SocketAddr = "127.0.0.2:50000".parse().unwrap();
        assert_eq!(parse_reply(&answer, &id(elsewhere, remote)).unwrap(), None);
        let other_port: SocketAddr = "127.0.0.1:50001".parse().unwrap();
        assert_eq!(parse_reply(&answer, &id(other_port, remote)).unwrap(), None);
        // An IPv6 address that merely ends in the IPv4 one is not its mapped form.
        let native: SocketAddr = "[::7f00:1]:50000".parse().unwrap();
        let native_answer = reply(native, mapped(remote), 1, 1004, 5151);
        assert_eq!(
            parse_reply(&native_answer, &id(local, remote)).unwrap(),
            None
        );
    }

    /// A closed client socket (TIME_WAIT: uid 0, inode 0), one without an inode, and an answer
    /// about another socket all count as no client, never as root.
    #[test]
    fn closed_or_foreign_sockets_are_no_client() {
        let (local, remote) = client_and_server();
        let closed = reply(local, remote, 6, 0, 0);
        assert_eq!(parse_reply(&closed, &id(local, remote)).unwrap(), None);
        let no_inode = reply(local, remote, 1, 0, 0);
        assert_eq!(parse_reply(&no_inode, &id(local, remote)).unwrap(), None);
        let listening = reply(local, remote, 10, 0, 77);
        assert_eq!(parse_reply(&listening, &id(local, remote)).unwrap(), None);
        let other: SocketAddr = "127.0.0.1:50001".parse().unwrap();
        let elsewhere = reply(other, remote, 1, 1001, 4242);
        assert_eq!(parse_reply(&elsewhere, &id(local, remote)).unwrap(), None);
    }

    /// The kernel's answer for a real connection of this process names its uid (the /proc
    /// fallback in `peer` is checked against this answer there).
    #[test]
    fn asks_the_kernel() {
        let connection = crate::fake::LoopbackConnection::open();
        let (peer, server) = (connection.client, connection.server);
        let row = query(peer, server).unwrap().expect("the socket is found");
        assert_eq!(
            query(peer, server).unwrap(),
            Some(row),
            "the kept socket answers again"
        );
        drop(connection);
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(query(gone, server).unwrap(), None);
    }

    /// A dual-stack client (a JVM's socket) connected to an IPv4 listener is found by the
    /// IPv4 pair the listener sees.
    #[test]
    fn asks_the_kernel_about_a_dual_stack_client() {
        let connection = crate::fake::LoopbackConnection::open_dual_stack();
        let row = query(connection.client, connection.server).unwrap();
        assert!(row.is_some_and(|row| row.inode != 0), "found: {row:?}");
    }
}
