//! assume-roled keeps temporary credentials for roles in other AWS accounts fresh in memory and
//! serves them on loopback in the ECS container-credentials format, so that every AWS SDK and
//! tool on the host works in those accounts with one line in a shell profile and no access key
//! anywhere on disk.
//!
//! How the parts fit, in the order data flows (each module uses only those above it):
//!
//! - `config` reads and validates the TOML file into a [`config::Config`]; `accounts` names
//!   users and groups through the system's name service;
//! - `clock` is the wall-clock seam; `sts` is the one seam to AWS: `AssumeRole` and
//!   `GetCallerIdentity` with the host's own (instance profile) credentials, errors sorted into
//!   transient and configuration; `credentials` holds a set, redacted in `Debug`, with its
//!   response bodies built once per refresh;
//! - `refresh` runs one task per role that calls STS at start, then at half-life, and backs off
//!   when STS fails; it publishes each role's status on a `watch` channel;
//! - `roles` is the table of served roles handlers read; `supervisor` owns the refresher tasks,
//!   writes that table and applies reloads; `metrics` counts requests, refreshes, STS latency and
//!   connections; `token` creates and checks the token files clients read;
//! - `sockdiag` asks the kernel who owns a socket; `peer` turns that into the local user of a
//!   connection; `listener` accepts connections within limits and drains on stop;
//! - `access` decides, for both endpoints, whether a request gets a role's credentials now,
//!   and writes the audit line; `http` builds responses; `imds` answers as IMDSv2 for one role
//!   (never passing the instance's own `iam/` through); `server` checks host, origin and token
//!   before routing and answers from what the refreshers published: it never calls STS;
//! - `notify` tells systemd about readiness, status and liveness; [`daemon`] wires it all from
//!   the parts its caller hands in and joins every task; [`signals`] turns signals into
//!   cancellation and reload requests;
//! - [`check`], [`env`](mod@env) and [`status`] are the `check`, `env` and `status` commands.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// In the order data flows. Public: what `main` uses (and, with the `fuzzing` feature, the
// entry points of the fuzz targets).
pub mod config;
mod accounts;
mod clock;
mod credentials;
mod sts;
mod refresh;
mod roles;
mod supervisor;
mod metrics;
mod token;
mod sockdiag;
mod peer;
mod listener;
mod http;
mod access;
mod imds;
mod server;
mod notify;
pub mod daemon;
pub mod signals;
pub mod check;
pub mod env;
pub mod status;
#[cfg(test)]
mod fake;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
