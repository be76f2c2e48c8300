//! build.rs's link order (README, Benchmarks): a release build hands lld the list of functions
//! the daemon runs, and a build whose linker does not take the option still builds, in the
//! default order, with a warning. The build script is compiled on its own and run as cargo
//! runs it, with the environment of each case; its probe links real (empty) programs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::TempDir;

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string())
}

/// The host target, as rustc names it.
fn host() -> String {
    let version = Command::new(rustc())
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// build.rs compiled into `dir`.
fn build_script(dir: &Path) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = dir.join("build-script");
    let status = Command::new(rustc())
        .args(["--edition=2024", "-o"])
        .arg(&binary)
        .arg(manifest.join("build.rs"))
        .status()
        .expect("rustc runs");
    assert!(status.success(), "build.rs compiles");
    binary
}

/// What the build script prints for a build with `profile`, `rustflags` and the extra
/// environment, cargo's usual variables set as cargo sets them.
fn run(script: &Path, profile: &str, rustflags: &str, extra: &[(&str, &str)]) -> String {
    let out_dir = TempDir::new("link-order-out");
    let output = Command::new(script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("PROFILE", profile)
        .env("TARGET", host())
        .env("RUSTC", rustc())
        .env("OUT_DIR", out_dir.path())
        .env("CARGO_MANIFEST_DIR", env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .envs(extra.iter().copied())
        .output()
        .expect("the build script runs");
    assert!(output.status.success(), "the build script succeeds");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const ORDERING: &str = "cargo:rustc-link-arg-bins=--symbol-ordering-file=";
const NOT_APPLIED: &str = "cargo:warning=link order not applied";

#[test]
fn release_builds_are_link_ordered_and_other_linkers_fall_back_with_a_warning() {
    let dir = TempDir::new("link-order");
    let script = build_script(dir.path());

    // Rust's own lld (rustup's x86_64 Linux default): the list goes to the linker.
    let release = run(&script, "release", "", &[]);
    assert!(release.contains(ORDERING), "release build: {release}");
    assert!(!release.contains(NOT_APPLIED), "release build: {release}");

    // GNU ld rejects the option: no ordering arguments (they would fail the link), a warning
    // that says why.
    let bfd = run(&script, "release", "-Clink-arg=-fuse-ld=bfd", &[]);
    assert!(!bfd.contains(ORDERING), "GNU ld build: {bfd}");
    assert!(
        bfd.contains(NOT_APPLIED) && bfd.contains("not lld"),
        "GNU ld build: {bfd}"
    );

    // Debug builds and the opt-out: nothing to the linker, nothing to warn about.
    for (case, output) in [
        ("debug", run(&script, "debug", "", &[])),
        (
            "opted out",
            run(&script, "release", "", &[("ASSUME_ROLED_LINK_ORDER", "0")]),
        ),
    ] {
        assert!(!output.contains(ORDERING), "{case}: {output}");
        assert!(!output.contains(NOT_APPLIED), "{case}: {output}");
    }
}
