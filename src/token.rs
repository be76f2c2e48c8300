//! The shared secret clients present as `Authorization`, and the file that hands it to them.
//!
//! SDKs re-read `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` on every fetch and send its content
//! verbatim, so the file holds the token and nothing else: visible ASCII, no trailing newline
//! (botocore and the Rust SDK refuse a token with one). It is created once, atomically, mode
//! 0640, and reused across restarts so that long-lived shells keep working. Like ssh with its
//! keys, the daemon refuses to use a token file that other users can read.

use std::fmt;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngExt;
use rand::distr::Alphanumeric;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Generated tokens: 48 alphanumeric characters, about 285 bits of randomness.
const GENERATED_LEN: usize = 48;
/// Shorter tokens in an existing file are refused: 32 characters is the floor clients expect.
const MIN_LEN: usize = 32;
/// Owner reads and writes, the group (the users allowed in) reads, others nothing.
const FILE_MODE: u32 = 0o640;
/// A directory the daemon creates for the token file: the group may enter, others may not.
const DIR_MODE: u32 = 0o750;

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

    /// Whether `presented` is exactly the token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// The token itself, for writing the file and for tests.
    pub fn expose(&self) -> &str {
        &self.0
    }
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
    OpenToOthers { path: PathBuf, mode: u32 },
    #[error("cannot read token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {} is unusable: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot create token file {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads the token at `path`, creating the file with a new token if there is none.
pub fn load_or_create(path: &Path) -> Result<AuthToken, TokenFileError> {
    match fs::metadata(path) {
        Ok(_) => load(path),
        Err(error) if error.kind() == ErrorKind::NotFound => create(path),
        Err(source) => Err(TokenFileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads an existing token file, refusing one that others can read.
pub fn load(path: &Path) -> Result<AuthToken, TokenFileError> {
    let read_error = |source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = fs::metadata(path).map_err(read_error)?;
    if !metadata.is_file() {
        return Err(TokenFileError::Invalid {
            path: path.to_owned(),
            reason: "it is not a regular file".to_owned(),
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(TokenFileError::OpenToOthers {
            path: path.to_owned(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(read_error)?);
    AuthToken::parse(&text).map_err(|reason| TokenFileError::Invalid {
        path: path.to_owned(),
        reason,
    })
}

/// Writes a new token to a temporary file, then links it into place, which fails if another
/// process created the file meanwhile; in that case that process's token is used.
fn create(path: &Path) -> Result<AuthToken, TokenFileError> {
    let create_error = |source| TokenFileError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(create_error)?;
    }
    let token = AuthToken::generate();
    let temporary = path.with_file_name(format!(".token.{}.tmp", std::process::id()));
    let written = write_private(&temporary, token.expose());
    let linked = written.and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(token),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => load(path),
        Err(error) => Err(create_error(error)),
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    // The umask may have taken group read away; the group is who the file is for.
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
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
        let created = load_or_create(&path).unwrap();
        let content = fs::read_to_string(&path).unwrap();
        assert_eq!(content, created.expose());
        assert_eq!(content.len(), GENERATED_LEN);
        assert!(content.bytes().all(|b| b.is_ascii_alphanumeric()));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let reused = load_or_create(&path).unwrap();
        assert_eq!(reused.expose(), created.expose());
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_a_file_others_can_read() {
        let dir = temp_dir("open");
        let path = dir.join("token");
        load_or_create(&path).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let error = load_or_create(&path).unwrap_err().to_string();
        assert!(
            error.contains("can be read by other users (mode 644)"),
            "{error}"
        );
        assert!(error.contains(&path.display().to_string()), "{error}");
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
        assert!(!format!("{token:?}").contains(&text));
    }
}
