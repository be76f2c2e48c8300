//! Link order for the release binary (README, Benchmarks: the link order).
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
//! that fails the binary is linked in the default order, with a warning.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ORDER_FILE: &str = "bench/link-order.txt";
const OPT_OUT: &str = "ASSUME_ROLED_LINK_ORDER";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed={OPT_OUT}");
    let release = env("PROFILE").is_some_and(|profile| profile == "release");
    let opted_out = env(OPT_OUT).is_some_and(|value| value == "0");
    let order = PathBuf::from(env("CARGO_MANIFEST_DIR").expect("cargo sets it")).join(ORDER_FILE);
    if !release || opted_out || !order.exists() {
        return;
    }
    let args = ordering_args(&order);
    if linker_accepts(&args) {
        // Names missing from a build (code changed since the list was made) are skipped, not
        // errors: a stale list costs memory, which `bench/link-order.sh check` reports.
        for arg in args {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    } else {
        println!(
            "cargo:warning=link order not applied: this build's linker does not take \
             --symbol-ordering-file (not lld); the daemon works the same, with about 3 MiB \
             more resident code when idle. {OPT_OUT}=0 skips this check."
        );
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn ordering_args(order: &Path) -> [String; 2] {
    [
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ]
}

/// Links an empty program with `link_args` as cargo will link the daemon: the same rustc,
/// target, RUSTFLAGS and configured linker.
fn linker_accepts(link_args: &[String]) -> bool {
    let out_dir = PathBuf::from(env("OUT_DIR").expect("cargo sets it"));
    let source = out_dir.join("link_order_probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
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
    rustc
        .arg(&source)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The RUSTFLAGS cargo passes to this build (`CARGO_ENCODED_RUSTFLAGS`, 0x1f-separated).
fn rustflags() -> Vec<String> {
    env("CARGO_ENCODED_RUSTFLAGS")
        .filter(|flags| !flags.is_empty())
        .map(|flags| flags.split('\x1f').map(str::to_string).collect())
        .unwrap_or_default()
}
