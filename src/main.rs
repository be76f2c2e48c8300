//! The `assume-roled` command line: parse arguments, set up logging, dispatch, map errors to
//! exit codes (78, `EX_CONFIG`, for anything an operator must fix in a file).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use assume_roled::cli::{Cli, Command, GuardAction};
use assume_roled::config;
use assume_roled::daemon::{Notifier, SdkSts, SystemClock};
use assume_roled::env::{self, profile_lines};
use assume_roled::logs::{self, QueueWriter, journal};
use assume_roled::{check, client, daemon, guard, profiles, signals, status};

/// sysexits.h `EX_CONFIG`: systemd's `RestartPreventExitStatus=78` stops a restart loop on it.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    // The watch runs for as long as the daemon, under systemd: it logs as the daemon does.
    let watching = matches!(
        cli.command,
        Command::Guard {
            action: GuardAction::Watch,
            ..
        }
    );
    // Before any thread starts (the log writer is one): taking systemd's listeners clears
    // LISTEN_FDS and LISTEN_PID.
    let passed = match serving.then(daemon::Passed::from_systemd).transpose() {
        Ok(passed) => passed.unwrap_or_default(),
        Err(error) => return report(&error),
    };
    let logs = init_logging(serving || watching);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let outcome = match runtime {
        Ok(runtime) => {
            let outcome = runtime.block_on(run(cli.command, passed));
            // A name-service lookup hung on a blocking thread must not hold the exit (and the
            // log flush below) until systemd kills the process.
            runtime.shutdown_timeout(RUNTIME_STOP_LIMIT);
            outcome
        }
        Err(error) => Err(anyhow::Error::from(error).context("cannot start the runtime")),
    };
    // The last lines (the drain, "stopped") are still in the queue.
    logs.flush_within(LOG_FLUSH_LIMIT);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error),
    }
}

/// How long the runtime's blocking threads may take to finish at exit.
const RUNTIME_STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long the process waits at exit for its queued log lines to be written.
const LOG_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("assume-roled: {error:#}");
    ExitCode::from(exit_code(error))
}

async fn run(command: Command, passed: daemon::Passed) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args.config, passed).await,
        Command::Check {
            config,
            assume,
            as_user,
        } => {
            let loaded = config::load(&config.config)?;
            println!("{}: ok", config.config.display());
            print!("{}", check::summary(&loaded, check::group_exists));
            let environment = daemon::Environment::from_process();
            if let Some(warning) = check::metadata_exposure(&loaded, &environment) {
                print!("{warning}");
            }
            if let Some(line) = check::guard_state(&loaded) {
                print!("{line}");
            }
            if assume {
                let subject = check::subject_for(as_user.as_deref())?;
                print!("{}", check::assume_all(&loaded, &subject).await?);
            }
            Ok(())
        }
        Command::Status { config, json } => {
            let loaded = config::load(&config.config)?;
            let report = client::fetch(&loaded)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", status::render(&report));
            }
            let unservable: Vec<&str> = report
                .roles
                .iter()
                .filter(|role| !role.servable)
                .map(|role| role.name.as_str())
                .collect();
            if !unservable.is_empty() {
                anyhow::bail!("nothing servable for: {}", unservable.join(", "));
            }
            Ok(())
        }
        Command::Guard {
            action,
            config,
            from_unit,
        } => match action {
            GuardAction::Apply => {
                let desired = guard::Desired::from_file(&config.config);
                let enforced = guard::enforce(&desired)?;
                for warning in guard::warnings(&desired) {
                    eprintln!("assume-roled: warning: {warning}");
                }
                match enforced {
                    guard::Enforced::Rules(rules) => print!("{}", guard::describe(&rules)),
                    guard::Enforced::Removed => println!(
                        "no [imds] guard or [containers] configured; nft table inet {} removed",
                        guard::TABLE
                    ),
                    // As the unit's ExecStartPre, `serve` reports the configuration (exit 78).
                    guard::Enforced::Lockdown { cause } if from_unit => {
                        eprintln!("assume-roled: {cause}\n{}", guard::LOCKDOWN_TEXT);
                    }
                    guard::Enforced::Lockdown { cause } => {
                        return Err(guard::GuardError::LockedDown(cause).into());
                    }
                }
                Ok(())
            }
            GuardAction::Watch => guard::watch::run(&config.config).await,
            GuardAction::Remove => {
                guard::remove()?;
                println!(
                    "guard removed (nft table inet {}, link {})",
                    guard::TABLE,
                    guard::LINK
                );
                Ok(())
            }
        },
        Command::Credentials {
            config,
            role,
            endpoints,
        } => {
            let endpoints = env::load_endpoints(&config.config, &endpoints)?;
            println!("{}", profiles::credentials(&endpoints, &role)?);
            Ok(())
        }
        Command::Profiles {
            config,
            write,
            endpoints,
        } => {
            let endpoints = env::load_endpoints(&config.config, &endpoints)?;
            let binary = std::env::current_exe().context("cannot tell this program's path")?;
            let readable = |path: &std::path::Path| std::fs::File::open(path).is_ok();
            // Absolute: the tools run the command from wherever they are.
            let config_path = std::path::absolute(&config.config)?;
            let stanzas = profiles::stanzas(&endpoints, readable, &binary, &config_path);
            if stanzas.is_empty() {
                anyhow::bail!(
                    "cannot read the token file of any role; members of a role's group may \
                     (ask an administrator to add you)"
                );
            }
            if !write {
                let texts: Vec<&str> = stanzas.iter().map(|s| s.text.as_str()).collect();
                print!("{}", texts.join("\n"));
                return Ok(());
            }
            let path = profiles::aws_config_path()?;
            let added = profiles::append_missing(&path, &stanzas)?;
            match added.is_empty() {
                true => println!("{}: every profile is there already", path.display()),
                false => println!("{}: added {}", path.display(), added.join(", ")),
            }
            Ok(())
        }
        Command::Env {
            config,
            role,
            shell,
            inline_token,
            endpoints,
            docker,
            compose,
        } => {
            let endpoints = env::load_endpoints(&config.config, &endpoints)?;
            let readable = |path: &std::path::Path| std::fs::File::open(path).is_ok();
            let form = match (docker, compose) {
                (true, _) => Some(env::ContainerForm::Docker),
                (_, true) => Some(env::ContainerForm::Compose),
                _ => None,
            };
            if let Some(form) = form {
                let lines = env::container_lines(&endpoints, role.as_deref(), form, readable)
                    .map_err(anyhow::Error::msg)?;
                print!("{lines}");
                return Ok(());
            }
            let read = |path: &std::path::Path| std::fs::read_to_string(path).ok();
            let inline: Option<env::ReadToken<'_>> = inline_token.then_some(&read);
            let lines = profile_lines(&endpoints, role.as_deref(), shell, readable, inline)
                .map_err(anyhow::Error::msg)?;
            print!("{lines}");
            Ok(())
        }
    }
}

/// `serve`: load and bind here, from the process's own environment and signals; the daemon
/// itself takes everything it serves with from its caller.
async fn serve(config_path: PathBuf, passed: daemon::Passed) -> anyhow::Result<()> {
    let config = config::load(&config_path)?;
    let stop = CancellationToken::new();
    signals::cancel_on_signal(stop.clone()).context("cannot install signal handlers")?;
    let reloads = signals::reload_on_hangup().context("cannot install the SIGHUP handler")?;
    let listeners = daemon::bind(&config, passed).await?;
    let environment = daemon::Environment::from_process();
    daemon::preflight(&config, &listeners.local_addresses()?, &environment)?;
    daemon::require_trust_roots(&config)?;
    daemon::require_descriptors(&config)?;
    let parts = daemon::Parts {
        sts: Arc::new(SdkSts::new(&config.sts).await),
        listeners,
        config,
        config_path,
        clock: SystemClock::shared(),
        environment,
        notifier: Notifier::from_env(),
        reloads,
    };
    daemon::run(parts, stop).await
}

fn exit_code(error: &anyhow::Error) -> u8 {
    if daemon::is_operator_error(error) {
        EXIT_CONFIG
    } else {
        1
    }
}

/// Logs go to stderr, or under journald to the journal as records with fields (`logs::journal`). `ASSUME_ROLED_LOG` (or `RUST_LOG`) sets the
/// level; the daemon defaults to `info`, the one-shot commands to `warn`. A filter that cannot
/// be read is said so in the log, and the default applies.
fn init_logging(daemon: bool) -> QueueWriter {
    let default = if daemon { "info" } else { "warn" };
    let (variable, wanted) = ["ASSUME_ROLED_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|name| Some((name, std::env::var(name).ok()?)))
        .unwrap_or(("", default.to_owned()));
    let (filter, unreadable) = match logs::filter::wanted(&wanted) {
        Ok(filter) => (filter, None),
        Err(error) => (logs::filter::wanted(default).expect("a level"), Some(error)),
    };
    let filter = filter.and(logs::filter::secret_safe_caps());
    // Off the request path: a slow journal never holds a request, and what a full queue has
    // to drop is counted and reported. Under journald, records with fields; else text lines.
    let journal = std::env::var("JOURNAL_STREAM").ok();
    let socket = (daemon && journal::stderr_is_journal(journal.as_deref()))
        .then(|| journal::JournalSocket::connect(std::path::Path::new(journal::SOCKET)).ok())
        .flatten();
    let writer = match socket {
        Some(socket) => {
            let (writer, _dropped) = logs::queued(logs::QUEUE_LINES, socket);
            let records = journal::JournalLayer::new(writer.clone()).with_filter(filter);
            tracing_subscriber::registry().with(records).init();
            writer
        }
        None => {
            let (writer, _dropped) = logs::queued(logs::QUEUE_LINES, std::io::stderr());
            let lines = fmt::layer()
                .with_writer(writer.clone())
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter);
            tracing_subscriber::registry().with(lines).init();
            writer
        }
    };
    if let Some(error) = unreadable {
        tracing::warn!("{variable}={wanted:?} is not a log filter ({error}); logging at {default}");
    }
    writer
}
