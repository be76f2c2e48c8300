//! assume-roled keeps temporary credentials for roles in other AWS accounts fresh in memory and
//! serves them on loopback in the ECS container-credentials format, so that every AWS SDK and
//! tool on the host works in those accounts with one line in a shell profile and no access key
//! anywhere on disk.
//!
//! How the parts fit, in the order data flows; each module uses only those above it
//! (`tests/layout.rs` checks it):
//!
//! - [`logs`] writes log lines off the request path, through a bounded queue that counts what it
//!   has to drop; `accounts` names users and groups through the system's name service; `config` reads and
//!   validates the TOML file into a [`config::Config`]; `clock` is the wall-clock seam;
//!   `credentials` holds a set, redacted in `Debug`, with its response bodies built once per
//!   refresh; `metrics` counts requests, refreshes, STS latency and connections;
//! - `sts` is the one seam to AWS: `AssumeRole` and `GetCallerIdentity` with the host's own
//!   (instance profile) credentials, errors sorted into transient and configuration;
//! - `refresh` runs one task per session that calls STS at start, then at half-life, and backs
//!   off when STS fails; it publishes the session's status on a `watch` channel; `sessions` holds
//!   the per-user sessions of a role whose session name names the user, started by each user's
//!   first request and dropped when unused;
//! - `token` creates and checks the token files clients read; `roles` is the table of served
//!   roles handlers read; `supervisor` owns the refresher tasks, writes that table and applies
//!   reloads;
//! - `sockdiag` asks the kernel who owns a socket; `peer` turns that into the local user of a
//!   connection; `listener` accepts connections within limits and drains on stop;
//! - `http` builds responses; `access` decides, for both endpoints, whether a request gets a
//!   role's credentials now; `audit` records it (a line per client, role and credential set,
//!   and counts of the repeats); `imds` is the IMDSv2 endpoint's own parts (session tokens,
//!   which paths exist, the passthrough that never passes the instance's own `iam/`);
//!   [`status`] is the operator's report (and the `status` command); `server` checks host,
//!   origin, token and metadata session on each connection's snapshot, answers credentials
//!   for both endpoints on one path, and routes the rest; it answers from what the
//!   refreshers published: it never calls STS;
//! - [`guard`] installs the firewall rules that keep local users from the real instance
//!   metadata, fails closed, and keeps them in place (`guard watch`); `guard_state` is what the
//!   watch last found, which metrics, `status` and `check` show;
//! - `notify` tells systemd about readiness, status and liveness; [`daemon`] wires it all from
//!   the parts its caller hands in and joins its tasks; [`signals`] turns signals into
//!   cancellation and reload requests;
//! - [`env`](mod@env) is the `env` command, and the public copy of where roles are served that
//!   the daemon writes for it; [`check`] is the `check` command; [`client`] asks the
//!   running daemon for the `status` and `credentials` commands; [`profiles`] is the
//!   `credentials` and `profiles` commands (each role as an AWS profile); [`cli`] is the command line's definition,
//!   which `main` parses and the man page and completions are made from.
//!
//! One lock policy: the few std mutexes guard caches and are never held across an `.await`; a
//! lock poisoned by a panic elsewhere is used as it is (a cache entry may be missing, nothing
//! worse).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// In the order data flows. Public: what `main` uses (and, with the `fuzzing` feature, the
// entry points of the fuzz targets).
pub mod logs;
mod accounts;
pub mod config;
mod clock;
mod credentials;
mod guard_state;
mod metrics;
mod sts;
mod refresh;
mod sessions;
mod token;
mod roles;
mod supervisor;
mod sockdiag;
mod peer;
mod admission;
mod listener;
mod http;
mod access;
mod audit;
mod imds;
pub mod status;
mod server;
mod notify;
pub mod guard;
pub mod env;
pub mod daemon;
pub mod signals;
pub mod check;
pub mod client;
pub mod profiles;
pub mod cli;
#[cfg(test)]
mod fake;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
