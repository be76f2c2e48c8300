//! The shared secret clients present as `Authorization`, and the file that hands it to them.
//!
//! SDKs re-read `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` on every fetch and send its content
//! verbatim, so the file holds the token and nothing else: visible ASCII, no trailing newline
//! (botocore and the Rust SDK refuse a token with one). It is created once, atomically, mode
//! 0640, and reused across restarts so that long-lived shells keep working. Like ssh with its
//! keys, the daemon refuses to use a token file that other users can read.
//!
//! A role may have a token file of its own, given to a group: then membership of that group is
//! what grants the role. If the configured group changes, the file is rewritten with a new token,
//! so a copy kept by a former member stops working; SDKs re-read the file, so members notice
//! nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngExt;
use rand::distr::Alphanumeric;
use subtle::{Choice, ConstantTimeEq};
use tracing::warn;
use zeroize::Zeroizing;

use crate::accounts;
use crate::config::{Config, RoleConfig};

/// Generated tokens: 48 alphanumeric characters, about 285 bits of randomness.
const GENERATED_LEN: usize = 48;
/// Shorter tokens in an existing file are refused: 32 characters is the floor clients expect.
const MIN_LEN: usize = 32;
/// Owner reads and writes, the group (the users allowed in) reads, others nothing.
const FILE_MODE: u32 = 0o640;
/// A directory the daemon creates for a token file (as the unit's `StateDirectoryMode=`):
/// others may pass through, not list, to the files they may read: a role's token file (its
/// group is not the daemon's) and the public copy of the endpoints, for `env`.
const DIR_MODE: u32 = 0o751;

/// The token; compared in constant time, never shown by `Debug`.
#[derive(Clone)]
pub struct AuthToken(Zeroizing<String>);

impl AuthToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        let text: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(GENERATED_LEN)
            .map(char::from)
            .collect();
        Self(Zeroizing::new(text))
    }

    /// Accepts a token read from a file. The reason for a refusal never quotes the content.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.ends_with('\n') || text.ends_with('\r') {
            return Err(
                "it ends with a newline, which clients would send as part of the token \
                        (rewrite it without one, e.g. printf %s TOKEN > FILE)"
                    .to_owned(),
            );
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("it contains spaces, control or non-ASCII characters".to_owned());
        }
        if text.len() < MIN_LEN {
            return Err(format!("it is shorter than {MIN_LEN} characters"));
        }
        Ok(Self(Zeroizing::new(text.to_owned())))
    }

    /// Whether `presented` is exactly the token, in time independent of where they differ. Eight
    /// bytes are compared at a time: one constant-time comparison per word rather than per byte
    /// (on every request, that was most of the check's cost).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let token = self.0.as_bytes();
        if token.len() != presented.len() {
            return false;
        }
        let same = words(token)
            .zip(words(presented))
            .fold(Choice::from(1), |same, (a, b)| same & a.ct_eq(&b));
        same.into()
    }

    /// The token itself, for writing the file and for tests.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// `bytes` as words of eight, the last one padded with zeros.
fn words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks(8).map(|chunk| {
        let mut word = [0; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        u64::from_ne_bytes(word)
    })
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(** redacted **)")
    }
}

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error(
        "token file {} can be read by other users (mode {mode:03o}); \
         run `chmod o-rwx {}` or delete it to have a new one created",
        path.display(),
        path.display()
    )]
    /// Others than owner and group may read the file.
    OpenToOthers {
        /// The token file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The file exists but cannot be read.
    #[error("cannot read token file {}: {cause}", path.display())]
    Read {
        /// The token file.
        path: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
    #[error("token file {} is unusable: {reason}", path.display())]
    /// The file holds no usable token.
    Invalid {
        /// The token file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be created or replaced.
    #[error("cannot create token file {}: {cause}", path.display())]
    Create {
        /// The token file.
        path: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
    #[error(
        "token file {}: there is no group {group} (create it with `groupadd {group}`)",
        path.display()
    )]
    /// The configured group does not exist.
    UnknownGroup {
        /// The token file.
        path: PathBuf,
        /// The group named in the configuration.
        group: String,
    },
    /// The file is one the server or another role already uses, under another name.
    #[error(
        "token file {} is the same file as {}: each role's own token file must be its own",
        path.display(),
        other.display()
    )]
    Shared {
        /// The role's token file.
        path: PathBuf,
        /// The file it is the same as.
        other: PathBuf,
    },
    #[error(
        "cannot give token file {} to group {group}: {cause}; the daemon's user must be a \
         member of {group} (under systemd: `systemctl edit assume-roled`, then \
         SupplementaryGroups={group})",
        path.display()
    )]
    /// The file could not be given to the group.
    Group {
        /// The token file.
        path: PathBuf,
        /// The group named in the configuration.
        group: String,
        /// What the system said.
        cause: std::io::Error,
    },
}

/// The group a token file belongs to: its readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGroup {
    /// The group's name, for messages.
    pub name: String,
    /// Its id, for `fchown`.
    pub gid: u32,
}

/// The own tokens of the roles that name a token file, by role name.
pub type RoleTokens = BTreeMap<String, AuthToken>;

/// Loads (creating them where missing) the token files of the roles that have their own, each
/// given to the role's group.
pub fn load_role_tokens(config: &Config) -> Result<RoleTokens, TokenFileError> {
    let mut tokens = RoleTokens::new();
    // The files already in use, by identity: another spelling of a path (`//`, `./`, a
    // symbolic link) must not give a role the server's file or another role's, whose token
    // would then grant more than the role (or be rewritten for the role's group).
    let mut taken: Vec<(FileId, &Path)> = file_id(&config.server.token_file)
        .map(|id| (id, config.server.token_file.as_path()))
        .into_iter()
        .collect();
    for role in &config.roles {
        let Some(path) = &role.token_file else {
            continue;
        };
        if let Some(id) = file_id(path)
            && let Some((_, other)) = taken.iter().find(|(seen, _)| *seen == id)
        {
            return Err(TokenFileError::Shared {
                path: path.clone(),
                other: other.to_path_buf(),
            });
        }
        let group = resolve_group(role, path)?;
        let token = load_or_create(path, group.as_ref())?;
        if let Some(group) = group.as_ref().filter(|_| role.group.is_some())
            && let Some(closed) = first_closed_directory(path, group.gid)
        {
            warn!(
                role = %role.name, group = %group.name, directory = %closed.display(),
                "members of the role's group cannot reach its token file: the directory does \
                 not let them through (chmod o+x, or give it to the group)"
            );
        }
        if let Some(id) = file_id(path) {
            taken.push((id, path));
        }
        tokens.insert(role.name.clone(), token);
    }
    Ok(tokens)
}

/// A file's identity: device and inode, the same whatever path names it.
type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    fs::metadata(path).ok().map(|meta| (meta.dev(), meta.ino()))
}

/// The group `role`'s token file must belong to: the configured one, else the daemon's own
/// (so that removing `group` from a role takes the file, with a new token, from that group).
fn resolve_group(role: &RoleConfig, path: &Path) -> Result<Option<FileGroup>, TokenFileError> {
    let Some(name) = &role.group else {
        return Ok(own_file_group());
    };
    match accounts::group_id(name) {
        Some(gid) => Ok(Some(FileGroup {
            name: name.clone(),
            gid,
        })),
        None => Err(TokenFileError::UnknownGroup {
            path: path.to_owned(),
            group: name.clone(),
        }),
    }
}

/// The group this process gives the files it creates (its file-system gid), from
/// `/proc/self/status`; `None` if that cannot be read.
fn own_file_group() -> Option<FileGroup> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let gids = status.lines().find_map(|line| line.strip_prefix("Gid:"))?;
    let gid = gids.split_whitespace().nth(3)?.parse().ok()?;
    Some(FileGroup {
        name: "the daemon's group".to_owned(),
        gid,
    })
}

/// Reads the token at `path`, creating the file with a new token if there is none. With a
/// `group`, the file is given to it; a file of another group gets a new token.
pub fn load_or_create(path: &Path, group: Option<&FileGroup>) -> Result<AuthToken, TokenFileError> {
    match fs::symlink_metadata(path) {
        // Refused, with the reason, by `load`.
        Ok(metadata) if metadata.file_type().is_symlink() => load(path),
        Ok(metadata) => match group {
            Some(group) if metadata.gid() != group.gid => regroup(path, group, metadata.gid()),
            _ => load(path),
        },
        Err(error) if error.kind() == ErrorKind::NotFound => create(path, group),
        Err(cause) => Err(TokenFileError::Read {
            path: path.to_owned(),
            cause,
        }),
    }
}

/// Reads an existing token file, refusing one that others can read, one that is a symbolic
/// link (whoever can write its directory could point it at a file they read), and one the
/// daemon's user does not own (someone else could rewrite it). This is the daemon's check of
/// its own files; a client reading a token it is allowed to read uses [`read`].
pub fn load(path: &Path) -> Result<AuthToken, TokenFileError> {
    let (file, metadata) = open_regular(path)?;
    let own = uzers::get_effective_uid();
    if metadata.uid() != own {
        return Err(TokenFileError::Invalid {
            path: path.to_owned(),
            reason: format!(
                "it belongs to uid {}, not to the daemon's user (uid {own}), who must own it",
                metadata.uid()
            ),
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(TokenFileError::OpenToOthers {
            path: path.to_owned(),
            mode,
        });
    }
    read_token(path, file)
}

/// Reads a token as a client does (`status`, as root or as a member of the file's group): who
/// owns the file is the daemon's concern at its start-up, not the reader's. A symbolic link
/// or anything but a regular file is still refused.
pub fn read(path: &Path) -> Result<AuthToken, TokenFileError> {
    let (file, _) = open_regular(path)?;
    read_token(path, file)
}

/// Opens the regular file at `path` without following a link, so that what is checked is what
/// is read; and without blocking, so that a FIFO put there is refused rather than waited on.
fn open_regular(path: &Path) -> Result<(fs::File, fs::Metadata), TokenFileError> {
    let read_error = |cause| TokenFileError::Read {
        path: path.to_owned(),
        cause,
    };
    let invalid = |reason: &str| TokenFileError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(invalid("it is a symbolic link; name the file itself"));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(invalid("it is not a regular file"));
    }
    Ok((file, metadata))
}

fn read_token(path: &Path, mut file: fs::File) -> Result<AuthToken, TokenFileError> {
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text)
        .map_err(|cause| TokenFileError::Read {
            path: path.to_owned(),
            cause,
        })?;
    AuthToken::parse(&text).map_err(|reason| TokenFileError::Invalid {
        path: path.to_owned(),
        reason,
    })
}

/// Writes a new token to a temporary file, then links it into place, which fails if another
/// process created the file meanwhile; in that case that process's token is used.
fn create(path: &Path, group: Option<&FileGroup>) -> Result<AuthToken, TokenFileError> {
    let create_error = |cause| TokenFileError::Create {
        path: path.to_owned(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.exists()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(create_error)?;
        // The umask may have taken bits the mode asked for.
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(create_error)?;
    }
    let token = AuthToken::generate();
    let temporary = temporary_path(path);
    let written = write_private(&temporary, path, token.expose(), group);
    let linked = written.and_then(|()| fs::hard_link(&temporary, path).map_err(create_error));
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(token),
        Err(TokenFileError::Create { cause, .. }) if cause.kind() == ErrorKind::AlreadyExists => {
            load(path)
        }
        Err(error) => Err(error),
    }
}

/// Replaces the token of a file that belongs to another group than configured: whoever could
/// read it before may have kept a copy.
fn regroup(path: &Path, group: &FileGroup, old_gid: u32) -> Result<AuthToken, TokenFileError> {
    load(path)?;
    let token = AuthToken::generate();
    let temporary = temporary_path(path);
    let replaced = write_private(&temporary, path, token.expose(), Some(group)).and_then(|()| {
        fs::rename(&temporary, path).map_err(|cause| TokenFileError::Create {
            path: path.to_owned(),
            cause,
        })
    });
    if replaced.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    replaced?;
    let old_group = accounts::group_name(old_gid);
    warn!(
        file = %path.display(), group = %group.name,
        previous_group = old_group.as_deref().unwrap_or("-"), previous_gid = old_gid,
        "token file given to a new group, with a new token: copies held by the previous \
         group's members no longer work"
    );
    Ok(token)
}

fn temporary_path(path: &Path) -> PathBuf {
    path.with_file_name(format!(".token.{}.tmp", std::process::id()))
}

/// Creates `temporary` holding `content`, mode 0640, given to `group` before anything is
/// written; errors name `target`, the file it is about to become.
fn write_private(
    temporary: &Path,
    target: &Path,
    content: &str,
    group: Option<&FileGroup>,
) -> Result<(), TokenFileError> {
    let create_error = |cause| TokenFileError::Create {
        path: target.to_owned(),
        cause,
    };
    // Left behind by a process that crashed here with the same pid, if present.
    let _ = fs::remove_file(temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(temporary)
        .map_err(create_error)?;
    // The umask may have taken group read away; the group is who the file is for.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(create_error)?;
    if let Some(group) = group {
        give_to_group(&file, group).map_err(|cause| TokenFileError::Group {
            path: target.to_owned(),
            group: group.name.clone(),
            cause,
        })?;
    }
    file.write_all(content.as_bytes()).map_err(create_error)?;
    file.sync_all().map_err(create_error)
}

fn give_to_group(file: &File, group: &FileGroup) -> std::io::Result<()> {
    std::os::unix::fs::fchown(file, None, Some(group.gid))
}

/// The first directory on the way to `path` that members of group `gid` cannot pass through,
/// judged by mode bits alone (ACLs may still let them).
pub fn first_closed_directory(path: &Path, gid: u32) -> Option<PathBuf> {
    path.ancestors().skip(1).find_map(|dir| {
        let metadata = fs::metadata(dir).ok()?;
        let mode = metadata.permissions().mode();
        (!lets_group_through(mode, metadata.gid(), gid)).then(|| dir.to_owned())
    })
}

/// Whether a directory with `mode`, owned by group `dir_gid`, lets members of `gid` enter.
fn lets_group_through(mode: u32, dir_gid: u32, gid: u32) -> bool {
    mode & 0o001 != 0 || (dir_gid == gid && mode & 0o010 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("assume-roled-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn created_once_with_mode_0640_and_no_newline_then_reused() {
        let dir = temp_dir("create");
        let path = dir.join("state/token");
        let created = load_or_create(&path, None).unwrap();
        let content = fs::read_to_string(&path).unwrap();
        assert_eq!(content, created.expose());
        assert_eq!(content.len(), GENERATED_LEN);
        assert!(content.bytes().all(|b| b.is_ascii_alphanumeric()));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let reused = load_or_create(&path, None).unwrap();
        assert_eq!(reused.expose(), created.expose());
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_a_file_others_can_read() {
        let dir = temp_dir("open");
        let path = dir.join("token");
        load_or_create(&path, None).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let error = load_or_create(&path, None).unwrap_err().to_string();
        assert!(
            error.contains("can be read by other users (mode 644)"),
            "{error}"
        );
        assert!(error.contains(&path.display().to_string()), "{error}");
        fs::remove_dir_all(dir).unwrap();
    }

    /// The daemon refuses a token file of another owner; a client (root running `status` on
    /// the daemon's file) reads it. (Giving the file away needs root, as the tests run.)
    #[test]
    fn a_client_reads_a_file_the_daemon_would_not_own() {
        let dir = temp_dir("client");
        let path = dir.join("token");
        let created = load_or_create(&path, None).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("belongs to uid 65534"), "{error}");
        assert_eq!(read(&path).unwrap().expose(), created.expose());
        let link = dir.join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(
            read(&link)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        fs::remove_dir_all(dir).unwrap();
    }

    /// Changing a role's group replaces its token, so that a former member's copy stops
    /// working. (Giving a file to a group the process is not in needs root, as the tests run.)
    #[test]
    fn a_group_gets_the_file_and_a_new_group_gets_a_new_token() {
        let dir = temp_dir("group");
        let path = dir.join("roles/piyo.token");
        let group = |gid| FileGroup {
            name: format!("g{gid}"),
            gid,
        };
        let first = load_or_create(&path, Some(&group(4242))).unwrap();
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!((metadata.gid(), metadata.mode() & 0o777), (4242, 0o640));
        let parent = fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(parent.mode() & 0o777, DIR_MODE);
        let same = load_or_create(&path, Some(&group(4242))).unwrap();
        assert_eq!(same.expose(), first.expose());

        let moved = load_or_create(&path, Some(&group(4343))).unwrap();
        assert_ne!(moved.expose(), first.expose());
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!((metadata.gid(), metadata.mode() & 0o777), (4343, 0o640));
        assert_eq!(fs::read_to_string(&path).unwrap(), moved.expose());
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    /// Another spelling of the server's token file (or a link to it) is refused as a role's
    /// own, before anything is written: the server's token stays as it was.
    #[test]
    fn a_role_cannot_take_the_server_file_under_another_name() {
        let dir = temp_dir("shared");
        fs::create_dir_all(&dir).unwrap();
        let server = dir.join("token");
        let link = dir.join("link");
        for spelling in [
            format!("{}/./token", dir.display()),
            link.display().to_string(),
        ] {
            let text = format!(
                "[server]\ntoken_file = \"{}\"\n[[roles]]\nname = \"piyo\"\n\
                 arn = \"arn:aws:iam::444455556666:role/piyo\"\ntoken_file = \"{spelling}\"\n",
                server.display()
            );
            let config = crate::config::from_toml(&text, "host").unwrap();
            let token = load_or_create(&server, None).unwrap();
            let _ = std::os::unix::fs::symlink(&server, &link);
            let error = load_role_tokens(&config).unwrap_err();
            assert!(matches!(error, TokenFileError::Shared { .. }), "{error}");
            assert!(load(&server).unwrap().matches(token.expose().as_bytes()));
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn directories_that_stop_a_group() {
        assert!(lets_group_through(0o751, 0, 100));
        assert!(lets_group_through(0o750, 100, 100));
        assert!(!lets_group_through(0o750, 0, 100));
        assert!(!lets_group_through(0o700, 100, 100));
    }

    /// The warning names the directory that stops the group, and nothing when none does.
    #[test]
    fn finds_the_directory_that_stops_a_group() {
        let dir = temp_dir("closed");
        let inner = dir.join("inner");
        fs::create_dir_all(&inner).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&inner, Permissions::from_mode(0o750)).unwrap();
        let file = inner.join("piyo.token");
        let gid = fs::metadata(&inner).unwrap().gid();
        assert_eq!(first_closed_directory(&file, gid), None);
        assert_eq!(
            first_closed_directory(&file, gid + 4242),
            Some(inner.clone())
        );
        fs::set_permissions(&inner, Permissions::from_mode(0o751)).unwrap();
        assert_eq!(first_closed_directory(&file, gid + 4242), None);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn parse_rules() {
        let good = "a".repeat(32);
        assert!(AuthToken::parse(&good).is_ok());
        assert!(
            AuthToken::parse(&format!("{good}\n"))
                .unwrap_err()
                .contains("newline")
        );
        assert!(AuthToken::parse(&"a".repeat(31)).is_err());
        assert!(AuthToken::parse(&format!("{good} x")).is_err());
    }

    #[test]
    fn matching_is_exact_and_debug_is_redacted() {
        let token = AuthToken::generate();
        let text = token.expose().to_owned();
        assert!(token.matches(text.as_bytes()));
        assert!(!token.matches(format!("{text}x").as_bytes()));
        assert!(!token.matches(&text.as_bytes()[1..]));
        assert!(!token.matches(format!("Bearer {text}").as_bytes()));
        // A difference anywhere, in a padded last word too, is one.
        let odd = format!("{text}odd");
        for (token, text) in [
            (token.clone(), &text),
            (AuthToken::parse(&odd).unwrap(), &odd),
        ] {
            assert!(token.matches(text.as_bytes()));
            for at in 0..text.len() {
                let mut other = text.clone().into_bytes();
                other[at] ^= 1;
                assert!(
                    !token.matches(&other),
                    "a difference at byte {at} went unseen"
                );
            }
        }
        assert!(!format!("{token:?}").contains(&text));
    }
}
