//! The command line's definition: `main` parses it, and the man page and shell completions are
//! made from it (`examples/manpages.rs`), so that they list exactly what the binary takes.
// Doc comments here are the help text, and clap reads them on every item it derives from: the
// fields and enums without one are documented by their variants' help.
#![allow(missing_docs)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;
use crate::env::{self, Shell};

/// The version and the commit built from (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ASSUME_ROLED_COMMIT"),
    ")"
);

/// Serves temporary AWS credentials for roles in other accounts on loopback.
#[derive(Parser)]
#[command(version = VERSION, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon: fetch credentials, keep them fresh, serve them.
    Serve(ConfigArg),
    /// Validate the configuration and print a summary.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also call AssumeRole once per role and print what it was asked with (session name,
        /// tags, session policies) and the identity obtained.
        #[arg(long)]
        assume: bool,
        /// With --assume: ask as this local user (for roles served per user, and the tags that
        /// name the user); by default the user running `check`.
        #[arg(long, value_name = "NAME", requires = "assume")]
        as_user: Option<String>,
    },
    /// Ask the running daemon how each role is doing; exits 1 if any has nothing to serve.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the report as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Install (apply) or remove the firewall rules that keep local users from the real
    /// instance metadata ([imds] guard); run as root, before the daemon starts.
    Guard {
        /// What to do.
        #[arg(value_enum)]
        action: GuardAction,
        #[command(flatten)]
        config: ConfigArg,
        /// As the unit's ExecStartPre: an unusable configuration still puts the lockdown rules
        /// in place, but exits 0 and leaves the report to `serve` (its exit 78 stops systemd's
        /// restart loop; a failing ExecStartPre would not).
        #[arg(long)]
        from_unit: bool,
    },
    /// Print the shell lines that point AWS tools at the daemon: eval "$(assume-roled env)".
    ///
    /// Clients that know neither AWS_CONTAINER_CREDENTIALS_FULL_URI nor a metadata port other
    /// than 80 (Debian 12's AWS SDK for Ruby, ruby-aws-sdk-core 3.168) are served only through
    /// the metadata guard ([imds] guard = "redirect"), with nothing set.
    Env {
        #[command(flatten)]
        config: ConfigArg,
        /// The role to use (required when several are configured).
        #[arg(long)]
        role: Option<String>,
        /// The syntax to print.
        #[arg(long, value_enum, default_value = "sh")]
        shell: Shell,
        /// Also export the token itself (AWS_CONTAINER_AUTHORIZATION_TOKEN), for clients that
        /// predate the token-file variable (Debian's aws CLI 2.9); it then lives in the shell's
        /// environment and goes stale when the token rotates.
        #[arg(long)]
        inline_token: bool,
        /// The public copy of the endpoints, read when the configuration is not readable (the
        /// daemon writes it beside its token file).
        #[arg(long, value_name = "PATH", default_value_os_t = env::default_public_copy())]
        endpoints: PathBuf,
        /// Print `docker run` flags for a container instead ([containers] must be configured):
        /// the full URI at the containers' address, and the token file mounted read-only.
        #[arg(long, conflicts_with_all = ["compose", "inline_token"])]
        docker: bool,
        /// The same as a Compose service's `environment` and `volumes`.
        #[arg(long, conflicts_with = "inline_token")]
        compose: bool,
    },
    /// Print one role's credentials in the `credential_process` format, from the running
    /// daemon, with the role's token file: what a profile's `credential_process` runs.
    ///
    /// The daemon decides as for any client (the same grant, audit line and per-user session);
    /// this command never calls STS and never writes anything. On any error it prints nothing
    /// on stdout and exits 1.
    Credentials {
        #[command(flatten)]
        config: ConfigArg,
        /// The role.
        #[arg(long)]
        role: String,
        /// The public copy of the endpoints, read when the configuration is not readable.
        #[arg(long, value_name = "PATH", default_value_os_t = env::default_public_copy())]
        endpoints: PathBuf,
    },
    /// Print an AWS profile (`credential_process`) for every role whose token file you can
    /// read, to append to ~/.aws/config; --write appends the missing ones.
    Profiles {
        #[command(flatten)]
        config: ConfigArg,
        /// Append the profiles that ~/.aws/config (or $AWS_CONFIG_FILE) does not have yet,
        /// leaving every other line as it is.
        #[arg(long)]
        write: bool,
        /// The public copy of the endpoints, read when the configuration is not readable.
        #[arg(long, value_name = "PATH", default_value_os_t = env::default_public_copy())]
        endpoints: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum GuardAction {
    /// Replace the daemon's nftables table with the rules the configuration asks for.
    Apply,
    /// Delete the daemon's nftables table.
    Remove,
    /// Apply, then keep the table in place: put it back within milliseconds when a firewall
    /// reload or another tool removes or changes it; SIGHUP re-reads the configuration; the
    /// rules stay when it stops. What assume-roled-guard.service runs.
    Watch,
}

#[derive(Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, short, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}
