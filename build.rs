//! Link order for the release binary (README, Benchmarks: the "Link order" entry).
//!
//! The kernel maps the binary's code 64 KiB at a time, so the functions the daemon runs at
//! start-up and on its request paths, scattered through 7.6 MiB of text, make most of the text
//! resident. `bench/link-order.txt` (made by `bench/link-order.sh`) lists those functions;
//! lld lays them out first and together (`--symbol-ordering-file`). Release builds only: debug
//! builds' symbol names differ anyway.
//!
//! Not every linker takes that option: rustup's Rust links x86_64 Linux programs with its own
//! lld, but the musl target, a distribution's rustc, `-C linker-features=-lld` or `-fuse-ld=bfd`
//! mean GNU ld, which rejects it and would fail the build. So the option is first tried on an
//! empty program linked the way this build links (same rustc, target, flags and linker); where
//! that fails the binary is linked in the default order, with a warning (which `cargo --quiet`
//! hides; `bench/link-order.sh check` tells from the binary). `ASSUME_ROLED_LINK_ORDER=0`
//! turns the link order off altogether, for what the try cannot see (flags given to
//! `cargo rustc` after `--`, or a `RUSTC_WRAPPER` that adds linker flags).

use std::path::{Path, PathBuf};
use std::process::Command;

const ORDER_FILE: &str = "bench/link-order.txt";
const OPT_OUT: &str = "ASSUME_ROLED_LINK_ORDER";

fn main() {
    record_commit();
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    for variable in probe_inputs() {
        println!("cargo:rerun-if-env-changed={variable}");
    }
    let release = env("PROFILE").is_some_and(|profile| profile == "release");
    let opted_out = env(OPT_OUT).is_some_and(|value| value == "0");
    let order = PathBuf::from(env("CARGO_MANIFEST_DIR").expect("cargo sets it")).join(ORDER_FILE);
    if !release || opted_out || !order.exists() {
        return;
    }
    let args = ordering_args(&order);
    match link_probe(&args) {
        // Names missing from a build (code changed since the list was made) are skipped, not
        // errors: a stale list costs memory, which `bench/link-order.sh check` reports.
        Ok(()) => args
            .iter()
            .for_each(|arg| println!("cargo:rustc-link-arg-bins={arg}")),
        Err(reason) => println!(
            "cargo:warning=link order not applied ({reason}): the daemon works the same, with \
             about 3 MiB more resident code when idle. {OPT_OUT}=0 turns the link order off."
        ),
    }
}

/// `--version` names the commit the binary was built from: `ASSUME_ROLED_COMMIT` where it is
/// set (a build from an exported tree, which has no repository), else the repository's HEAD,
/// else "unknown". Rebuilt when HEAD moves (a commit, a checkout).
fn record_commit() {
    println!("cargo:rerun-if-env-changed=ASSUME_ROLED_COMMIT");
    let git = |args: &[&str]| {
        let output = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        output.status.success().then(|| text.trim().to_owned())
    };
    // HEAD, the branch file it names, and packed-refs: only those that exist (cargo takes a
    // missing file for a changed one, and would rebuild the crate on every build).
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for file in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(path) = git(&["rev-parse", "--git-path", file])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = env("ASSUME_ROLED_COMMIT")
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ASSUME_ROLED_COMMIT={commit}");
}

/// The environment the probe's answer depends on. Cargo reruns a build script when RUSTFLAGS
/// or the linker change only if it says so: with `--target`, a changed flag would otherwise
/// reuse an answer given for another linker.
fn probe_inputs() -> Vec<String> {
    let target = env("TARGET")
        .unwrap_or_default()
        .to_uppercase()
        .replace(['-', '.'], "_");
    [
        OPT_OUT,
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_LINKER",
    ]
    .iter()
    .map(|name| name.to_string())
    .chain([
        format!("CARGO_TARGET_{target}_RUSTFLAGS"),
        format!("CARGO_TARGET_{target}_LINKER"),
    ])
    .collect()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Linker arguments through `-Xlinker`, one each, so a path with a comma stays whole (`-Wl,`
/// would split it).
fn ordering_args(order: &Path) -> [String; 4] {
    [
        "-Xlinker".to_string(),
        format!("--symbol-ordering-file={}", order.display()),
        "-Xlinker".to_string(),
        "--no-warn-symbol-ordering".to_string(),
    ]
}

/// Links an empty program with `link_args` as cargo will link the daemon: the same rustc,
/// target, RUSTFLAGS and configured linker. The error is rustc's first line about it.
fn link_probe(link_args: &[String]) -> Result<(), String> {
    let out_dir = PathBuf::from(env("OUT_DIR").expect("cargo sets it"));
    let source = out_dir.join("link_order_probe.rs");
    std::fs::write(&source, "fn main() {}\n")
        .map_err(|error| format!("cannot write {}: {error}", source.display()))?;
    let mut rustc = Command::new(env("RUSTC").unwrap_or_else(|| "rustc".to_string()));
    rustc
        .arg("--crate-type=bin")
        .arg("--crate-name=link_order_probe")
        .arg("--edition=2021")
        .arg(format!(
            "--target={}",
            env("TARGET").expect("cargo sets it")
        ))
        .arg("-o")
        .arg(out_dir.join("link_order_probe"))
        .args(rustflags());
    if let Some(linker) = env("RUSTC_LINKER") {
        rustc.arg(format!("-Clinker={linker}"));
    }
    for arg in link_args {
        rustc.arg(format!("-Clink-arg={arg}"));
    }
    let output = rustc
        .arg(&source)
        .output()
        .map_err(|error| format!("cannot run rustc: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    // GNU ld: "unrecognized option"; gold: "unknown option" (rustc quotes the linker's output).
    let unknown_option = ["unrecognized option", "unknown option"]
        .iter()
        .any(|words| stderr.contains(words));
    Err(if unknown_option {
        "this build's linker does not take --symbol-ordering-file: it is not lld".to_string()
    } else {
        let first_error = stderr.lines().find(|line| line.starts_with("error"));
        format!(
            "an empty program did not link: {}",
            first_error.unwrap_or("rustc failed")
        )
    })
}

/// The RUSTFLAGS cargo passes to this build (`CARGO_ENCODED_RUSTFLAGS`, 0x1f-separated).
fn rustflags() -> Vec<String> {
    env("CARGO_ENCODED_RUSTFLAGS")
        .filter(|flags| !flags.is_empty())
        .map(|flags| flags.split('\x1f').map(str::to_string).collect())
        .unwrap_or_default()
}
