//! Under journald, each log and audit line is sent in the journal's native protocol, with its
//! fields as journal fields (`ROLE=piyo`, `USER=alice`, `UID=1000`, `OUTCOME=served`,
//! `ACCESS_KEY_ID=ASIA…DS74`, …): `journalctl -u assume-roled ROLE=piyo OUTCOME=refused`
//! selects, and a log shipper reads fields instead of parsing text. `MESSAGE` is the line as
//! it reads on stderr (without time and level, which the journal has), so `journalctl` shows
//! what it always showed.
//!
//! Written here rather than with `tracing-journald`: that crate sends each event from the
//! thread that logs it (a request's, blocking when journald is slow), while these records go
//! through the same bounded queue as text lines ([`super::queued`]), off the request path and
//! counted when dropped; and the protocol is a few lines of `KEY=value`.
//!
//! The daemon is under journald when `JOURNAL_STREAM` names its stderr (what systemd sets for a
//! unit whose output goes to the journal); otherwise lines stay text on stderr.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::QueueWriter;

/// journald's socket for the native protocol.
pub const SOCKET: &str = "/run/systemd/journal/socket";
/// `SYSLOG_IDENTIFIER` of every record.
const IDENTIFIER: &str = "assume-roled";
/// What every record the layer makes starts with, so that the sink tells them from plain text
/// (the queue's own report of dropped lines).
const FIRST_FIELD: &[u8] = b"PRIORITY=";

/// Whether stderr is the journal: `JOURNAL_STREAM` (`device:inode`) names the file stderr is.
pub fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some((device, inode)) = journal_stream.and_then(|value| value.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse() == Ok(stderr.dev()) && inode.parse() == Ok(stderr.ino())
}

/// The layer that turns events into journal records and queues them.
pub struct JournalLayer {
    queue: QueueWriter,
}

impl JournalLayer {
    /// Records go into `queue`, whose writer sends them to a [`JournalSocket`].
    pub fn new(queue: QueueWriter) -> Self {
        Self { queue }
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let record = record(*metadata.level(), metadata.target(), &fields);
        let _ = self.queue.clone().write(&record);
    }
}

/// An event's message and fields, as their `Display` (or `Debug`) texts.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            name => self.others.push((name, text)),
        }
    }

    /// Quoted in the message, as the text line has it; the field itself takes it unquoted.
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            name => self.others.push((name, format!("{value:?}"))),
        }
    }
}

/// The journal record of one event: priority, identifier, target, the text line as `MESSAGE`,
/// then each field under its name in capitals. Pure.
fn record(level: Level, target: &str, fields: &Fields) -> Vec<u8> {
    let priority = match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    };
    let mut message = format!("{target}: {}", fields.message);
    for (name, value) in &fields.others {
        let _ = write!(message, " {name}={value}");
    }
    let mut record = Vec::new();
    field(&mut record, "PRIORITY", &priority.to_string());
    field(&mut record, "SYSLOG_IDENTIFIER", IDENTIFIER);
    field(&mut record, "TARGET", target);
    field(&mut record, "MESSAGE", &message);
    for (name, value) in &fields.others {
        if let Some(name) = journal_name(name) {
            field(&mut record, &name, unquoted(value));
        }
    }
    record
}

/// A field name as the journal takes it: capitals, digits and `_`, not starting with `_` (the
/// journal's own, trusted fields) or a digit, at most 64 characters.
fn journal_name(name: &str) -> Option<String> {
    let upper: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' | '_' => c,
            _ => '_',
        })
        .collect();
    let first = upper.chars().next()?;
    // The record's own fields: an event field of that name would give it two.
    let upper = match upper.as_str() {
        "PRIORITY" | "SYSLOG_IDENTIFIER" | "TARGET" | "MESSAGE" => format!("FIELD_{upper}"),
        _ => upper,
    };
    (first.is_ascii_uppercase() && upper.len() <= 64).then_some(upper)
}

/// A value the text line quotes (`user="alice"`) as the value itself; the escapes inside stay
/// (a name with a quote or newline is rare, and stays one field either way).
fn unquoted(value: &str) -> &str {
    (value.strip_prefix('"'))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(value)
}

/// The fields of a record as journald reads the native protocol: `NAME=value` lines, and for a
/// value with a newline the name, its length (64-bit little-endian), the value and a newline;
/// `None` for anything else. Pure.
fn fields_of(mut record: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut fields = Vec::new();
    while !record.is_empty() {
        let end = record.iter().position(|&b| b == b'\n' || b == b'=')?;
        let name = &record[..end];
        let (value, rest) = if record[end] == b'=' {
            let line = record[end + 1..].iter().position(|&b| b == b'\n')?;
            (&record[end + 1..end + 1 + line], &record[end + 2 + line..])
        } else {
            let length = record.get(end + 1..end + 9)?;
            let start = end + 9;
            let stop = start
                .checked_add(usize::try_from(u64::from_le_bytes(length.try_into().ok()?)).ok()?)?;
            if record.get(stop) != Some(&b'\n') {
                return None;
            }
            (&record[start..stop], &record[stop + 1..])
        };
        fields.push((name, value));
        record = rest;
    }
    Some(fields)
}

/// The `MESSAGE` of a record [`record`] made (its text line). Pure.
fn message_of(record: &[u8]) -> Option<&[u8]> {
    let fields = fields_of(record)?;
    fields
        .into_iter()
        .find_map(|(name, value)| (name == b"MESSAGE").then_some(value))
}

/// Appends `NAME=value\n`, or, for a value with a newline, the protocol's binary form: the name,
/// a newline, the length as 64-bit little-endian, the value, a newline.
fn field(record: &mut Vec<u8>, name: &str, value: &str) {
    record.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        record.push(b'\n');
        record.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        record.push(b'=');
    }
    record.extend_from_slice(value.as_bytes());
    record.push(b'\n');
}

/// The queue's sink under journald: each record is one datagram to journald's socket. Plain
/// text (the queue's own report of lines it dropped) becomes a warning record of its own. A
/// record journald does not take (restarting, or too large) is written as its text line to
/// `fallback` (stderr, which is the journal's stream too): no audit line is lost on the way.
pub struct JournalSocket {
    socket: UnixDatagram,
    fallback: Box<dyn Write + Send>,
}

impl JournalSocket {
    /// A socket connected to journald at `path`, falling back to stderr.
    pub fn connect(path: &Path) -> io::Result<Self> {
        Self::connect_with(path, Box::new(io::stderr()))
    }

    fn connect_with(path: &Path, fallback: Box<dyn Write + Send>) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Self { socket, fallback })
    }
}

impl Write for JournalSocket {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let record = match bytes.starts_with(FIRST_FIELD) {
            true => bytes.to_vec(),
            false => {
                let text = String::from_utf8_lossy(bytes);
                let fields = Fields {
                    message: text.trim_end().to_owned(),
                    others: Vec::new(),
                };
                record(Level::WARN, IDENTIFIER, &fields)
            }
        };
        if self.socket.send(&record).is_err() {
            // One line per record on the stream, whatever the message holds.
            let message = message_of(&record).unwrap_or_default();
            let line = String::from_utf8_lossy(message).replace('\n', "\\n");
            writeln!(self.fallback, "{line}")?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit_fields() -> Fields {
        Fields {
            message: "credentials served".to_owned(),
            others: vec![
                ("role", "piyo".to_owned()),
                ("user", "\"alice\"".to_owned()),
                ("uid", "1000".to_owned()),
                ("outcome", "\"served\"".to_owned()),
                ("access_key_id", "ASIA…DS74".to_owned()),
            ],
        }
    }

    #[test]
    fn a_record_has_the_text_line_and_each_field() {
        let record = String::from_utf8(record(Level::INFO, "audit", &audit_fields())).unwrap();
        assert_eq!(
            record,
            "PRIORITY=6\nSYSLOG_IDENTIFIER=assume-roled\nTARGET=audit\n\
             MESSAGE=audit: credentials served role=piyo user=\"alice\" uid=1000 outcome=\"served\" \
             access_key_id=ASIA…DS74\n\
             ROLE=piyo\nUSER=alice\nUID=1000\nOUTCOME=served\nACCESS_KEY_ID=ASIA…DS74\n"
        );
        assert!(record.as_bytes().starts_with(FIRST_FIELD));
    }

    /// The fields of a record as journald reads them, names as text.
    fn parse(record: &[u8]) -> Vec<(String, Vec<u8>)> {
        let fields = fields_of(record).expect("a record journald reads");
        (fields.into_iter())
            .map(|(name, value)| (String::from_utf8(name.to_vec()).unwrap(), value.to_vec()))
            .collect()
    }

    #[test]
    fn a_value_with_a_newline_cannot_forge_a_field() {
        let fields = Fields {
            message: "m".to_owned(),
            others: vec![("exe", "/tmp/x\nROLE=admin".to_owned())],
        };
        let parsed = parse(&record(Level::WARN, "audit", &fields));
        let names: Vec<&str> = parsed.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["PRIORITY", "SYSLOG_IDENTIFIER", "TARGET", "MESSAGE", "EXE"]
        );
        assert_eq!(parsed[4].1, b"/tmp/x\nROLE=admin");
        assert_eq!(parsed[3].1, b"audit: m exe=/tmp/x\nROLE=admin");
        let plain = parse(&record(Level::INFO, "audit", &audit_fields()));
        assert_eq!(plain.len(), 9, "every field of a plain record is read back");
    }

    /// A record journald does not take (its socket gone, as while it restarts) is still
    /// written: its text line, to the fallback.
    #[test]
    fn a_record_journald_does_not_take_goes_to_the_fallback_as_text() {
        #[derive(Clone, Default)]
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let path = std::env::temp_dir().join(format!("ar-journal-gone-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let journal = UnixDatagram::bind(&path).unwrap();
        let text = Shared::default();
        let mut sink = JournalSocket::connect_with(&path, Box::new(text.clone())).unwrap();
        drop(journal);
        std::fs::remove_file(&path).unwrap();
        sink.write_all(&record(Level::INFO, "audit", &audit_fields()))
            .unwrap();
        let fields = Fields {
            message: "two\nlines".to_owned(),
            others: Vec::new(),
        };
        sink.write_all(&record(Level::WARN, "audit", &fields))
            .unwrap();
        let written = String::from_utf8(text.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            written,
            "audit: credentials served role=piyo user=\"alice\" uid=1000 outcome=\"served\" \
             access_key_id=ASIA…DS74\naudit: two\\nlines\n"
        );
    }

    #[test]
    fn field_names_are_the_journals() {
        assert_eq!(
            journal_name("access_key_id").as_deref(),
            Some("ACCESS_KEY_ID")
        );
        assert_eq!(journal_name("held_back").as_deref(), Some("HELD_BACK"));
        assert_eq!(
            journal_name("_uid"),
            None,
            "trusted fields are journald's own"
        );
        assert_eq!(journal_name("1st"), None);
        assert_eq!(journal_name("a.b").as_deref(), Some("A_B"));
        assert_eq!(journal_name("message").as_deref(), Some("FIELD_MESSAGE"));
        assert_eq!(journal_name("target").as_deref(), Some("FIELD_TARGET"));
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("nonsense")));
        let stderr = std::fs::metadata("/proc/self/fd/2").unwrap();
        let other = format!("{}:{}", stderr.dev(), stderr.ino() + 1);
        assert!(!stderr_is_journal(Some(&other)));
        let same = format!("{}:{}", stderr.dev(), stderr.ino());
        assert!(stderr_is_journal(Some(&same)));
    }

    #[test]
    fn records_reach_a_datagram_socket_whole_and_text_becomes_a_warning() {
        let path = std::env::temp_dir().join(format!("ar-journal-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let journal = UnixDatagram::bind(&path).unwrap();
        let mut sink = JournalSocket::connect(&path).unwrap();
        let record = record(Level::INFO, "audit", &audit_fields());
        sink.write_all(&record).unwrap();
        sink.write_all(b"WARN assume-roled: 3 log lines dropped\n")
            .unwrap();
        let mut buffer = vec![0u8; 4096];
        let got = journal.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..got], &record[..]);
        let got = journal.recv(&mut buffer).unwrap();
        let text = String::from_utf8_lossy(&buffer[..got]);
        assert!(text.starts_with("PRIORITY=4\n"), "{text}");
        assert!(
            text.contains("MESSAGE=assume-roled: WARN assume-roled: 3 log lines dropped\n"),
            "{text}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
