//! assume-roled keeps temporary credentials for roles in other AWS accounts fresh in memory and
//! serves them on loopback in the ECS container-credentials format, so that every AWS SDK and
//! tool on the host works in those accounts with one line in a shell profile and no access key
//! anywhere on disk.
//!
//! How the parts fit, in the order data flows:
//!
//! - [`config`] reads and validates the TOML file into a [`config::Config`];
//! - [`sts`] is the one seam to AWS: `AssumeRole` with the host's own (instance profile)
//!   credentials, errors sorted into transient and configuration;
//! - [`refresh`] runs one task per role that calls STS at start, then at half-life, and backs off
//!   when STS fails; it publishes each role's [`refresh::RoleStatus`] on a `watch` channel;
//! - [`supervisor`] owns those tasks and the table of served roles, and applies reloads;
//! - [`credentials`] holds a credential set, redacted in `Debug`, with its response body built
//!   once per refresh;
//! - [`metrics`] counts requests, refreshes, STS latency and connections for Prometheus;
//! - [`listener`] accepts connections within limits (count, header timeout) and drains on stop,
//!   and attaches to each the [`peer::Peer`] (local user) the kernel names for its socket
//!   ([`sockdiag`]);
//! - [`server`] answers HTTP: host, origin and token checks first, then the role's current body
//!   or a 503 that says why; it never calls STS;
//! - [`token`] creates and checks the token files clients read, one per role if configured,
//!   given to the role's group (names from [`accounts`]);
//! - [`imds`] answers as IMDSv2 for one role, from the same engine, and passes other metadata
//!   through (never the instance's own `iam/`);
//! - [`daemon`] wires these together for `serve`; [`shutdown`] turns signals into cancellation;
//!   [`notify`] tells systemd about readiness, status and liveness;
//! - [`check`], [`env`] and [`status`] are the `check`, `env` and `status` commands (`status`
//!   reads the daemon's `GET /status` report).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// In the order data flows. Public: what `main` and the fuzz targets use.
pub mod config;
mod accounts;
mod clock;
mod credentials;
mod sts;
mod refresh;
mod roles;
mod supervisor;
mod metrics;
pub mod token;
mod sockdiag;
mod peer;
mod listener;
mod http;
pub mod access;
pub mod imds;
pub mod server;
mod notify;
pub mod daemon;
pub mod signals;
pub mod check;
pub mod env;
pub mod status;
#[cfg(test)]
mod fake;
