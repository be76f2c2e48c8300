//! Writes the man pages and shell completions into a directory, made from the command line's
//! definition (`assume_roled::cli`) and the README's configuration reference, so that they
//! list exactly what the binary takes: `cargo run --example manpages -- DIR`
//! (`packaging/build.sh` runs it). Writes
//!
//! - `DIR/man8/assume-roled.8` and a page per command (`assume-roled-serve.8`, …);
//! - `DIR/man5/assume-roled.toml.5`, the configuration file, from the README's reference table;
//! - `DIR/completions/`: `assume-roled.bash`, `_assume-roled` (zsh), `assume-roled.fish`.
//!
//! Nothing in them depends on when or where they are made (no date), for reproducible packages.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use assume_roled::cli::{Cli, VERSION};
use clap::CommandFactory;
use clap_complete::Shell;

const NAME: &str = "assume-roled";

fn main() -> io::Result<()> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: manpages DIR");
        std::process::exit(2);
    };
    command_pages(&out.join("man8"))?;
    config_page(&out.join("man5"))?;
    completions(&out.join("completions"))
}

/// `assume-roled(8)` and `assume-roled-<command>(8)` for each command.
fn command_pages(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    // The `help` command is clap's, and needs no page of its own.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    write_page(dir, NAME, command.clone(), &[MAIN_SECTIONS, MAIN_SEE_ALSO])?;
    for sub in command.get_subcommands() {
        // Built, a command's display name is already `assume-roled-<command>`.
        let name = format!("{NAME}-{}", sub.get_name());
        write_page(dir, &name, sub.clone(), &[COMMAND_SEE_ALSO])?;
    }
    Ok(())
}

/// What the main page says beyond the options: the files, the exit codes, where to read on.
const MAIN_SECTIONS: &str = r#".SH FILES
.TP
.I /etc/assume-roled/config.toml
The configuration (\fBassume-roled.toml\fR(5)).
.TP
.I /var/lib/assume-roled/token
The token clients send (mode 0640; the \fBAWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\fR).
.TP
.I /usr/share/doc/assume-roled/
The README (installation, security model, benchmarks) and an example configuration.
.SH EXIT STATUS
0 on success; 78 (\fBEX_CONFIG\fR) when the configuration cannot be used, with every problem
named by file, line and key (systemd does not restart the service on it); 1 on any other
failure (\fBstatus\fR: a role has nothing to serve).
"#;

const MAIN_SEE_ALSO: &str = r#".SH SEE ALSO
\fBassume-roled.toml\fR(5), \fBsystemctl\fR(1)
"#;

const COMMAND_SEE_ALSO: &str = r#".SH SEE ALSO
\fBassume-roled\fR(8), \fBassume-roled.toml\fR(5), \fBsystemctl\fR(1)
"#;

/// `command`'s page as `name.8`, clap_mangen's sections followed by `extra` (roff).
fn write_page(dir: &Path, name: &str, command: clap::Command, extra: &[&str]) -> io::Result<()> {
    let man = clap_mangen::Man::new(command)
        .title(name.to_uppercase())
        .section("8")
        .source(format!("{NAME} {VERSION}"))
        .manual("System Administration");
    let mut page = Vec::new();
    man.render(&mut page)?;
    page.extend_from_slice(extra.concat().as_bytes());
    fs::write(dir.join(format!("{name}.8")), page)
}

/// `assume-roled.toml(5)`: the README's configuration reference, as a man page.
fn config_page(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))?;
    let keys = reference_rows(&readme);
    assert!(
        keys.len() > 20,
        "the README's configuration reference was not found"
    );
    let mut page = format!(
        ".TH ASSUME-ROLED.TOML 5 \"\" \"{NAME} {VERSION}\" \"File Formats\"\n{CONFIG_INTRO}.SH KEYS\n"
    );
    for [key, default, mut meaning] in keys {
        if !meaning.ends_with(['.', ')']) {
            meaning.push('.');
        }
        page.push_str(&format!(
            ".TP\n{}\n{}\n.br\nDefault: {}.\n",
            roff_line(&key),
            roff_line(&capitalised(&meaning)),
            roff_line(&default)
        ));
    }
    page.push_str(CONFIG_END);
    fs::write(dir.join(format!("{NAME}.toml.5")), page)
}

const CONFIG_INTRO: &str = r#".SH NAME
assume-roled.toml \- configuration file of assume-roled
.SH SYNOPSIS
.I /etc/assume-roled/config.toml
.SH DESCRIPTION
A TOML file: a \fB[server]\fR table (where and how credentials are served), an \fB[sts]\fR
table (the region or endpoint of STS), one \fB[[roles]]\fR table per role served, and the
optional \fB[imds]\fR (an instance-metadata endpoint and the metadata guard) and
\fB[containers]\fR tables. Every key is optional but \fBroles[].name\fR and \fBroles[].arn\fR.
The daemon reads it at start and on \fBSIGHUP\fR (\fBsystemctl reload assume-roled\fR);
\fBassume-roled check\fR validates it.
"#;

const CONFIG_END: &str = r#".SH DIAGNOSTICS
Every problem is reported at once, each as \fIFILE\fR:\fILINE\fR: \fIKEY\fR: what is wrong, and the
command exits 78; a reload with an unusable file keeps the configuration in use.
.SH FILES
.I /usr/share/doc/assume-roled/config.example.toml
documents every key with an example.
.SH SEE ALSO
\fBassume-roled\fR(8)
"#;

/// The rows of the README's configuration reference table: key, default, meaning.
fn reference_rows(readme: &str) -> Vec<[String; 3]> {
    let section = readme
        .split("\n## Configuration reference\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_default();
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            let [key, default, meaning] = cells.as_slice() else {
                return None;
            };
            Some([key, default, meaning].map(|cell| cell.to_string()))
        })
        .collect()
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// One line of roff text from Markdown: `code` in bold, backslashes escaped, and a line that
/// would start with a control character protected.
fn roff_line(markdown: &str) -> String {
    let escaped = markdown.replace('\\', r"\e").replace('-', r"\-");
    let mut line = String::new();
    for (index, part) in escaped.split('`').enumerate() {
        if index % 2 == 1 {
            line.push_str(&format!(r"\fB{part}\fR"));
        } else {
            line.push_str(part);
        }
    }
    if line.starts_with(['.', '\'']) {
        line.insert_str(0, r"\&");
    }
    line
}

/// Bash, zsh and fish completions.
fn completions(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for (shell, file) in [
        (Shell::Bash, format!("{NAME}.bash")),
        (Shell::Zsh, format!("_{NAME}")),
        (Shell::Fish, format!("{NAME}.fish")),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), NAME, &mut script);
        fs::write(dir.join(file), script)?;
    }
    Ok(())
}
