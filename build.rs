//! Link order for the release binary (README, Benchmarks: "Where idle memory goes").
//!
//! The kernel maps the binary's code 64 KiB at a time, so the functions the daemon runs at
//! start-up and on its request paths, scattered through 7.6 MiB of text, make most of the text
//! resident. `bench/link-order.txt` (made by `bench/link-order.sh`) lists those functions;
//! lld lays them out first and together. Only for the GNU target's release builds, which link
//! with lld (Rust's default there): the musl build links with the C toolchain's ld, which has
//! no such option, and debug builds' symbol names differ anyway.

const ORDER_FILE: &str = "bench/link-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=ASSUME_ROLED_LINK_ORDER");
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let lld_target =
        std::env::var("TARGET").is_ok_and(|target| target == "x86_64-unknown-linux-gnu");
    // ASSUME_ROLED_LINK_ORDER=0: for a build with another linker (GNU ld has no such option).
    let wanted = std::env::var("ASSUME_ROLED_LINK_ORDER").map_or(true, |value| value != "0");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = std::path::Path::new(&manifest_dir).join(ORDER_FILE);
    if release && lld_target && wanted && order.exists() {
        // Names missing from a build (code changed since the list was made) are skipped, not
        // errors: a stale list costs memory, which `bench/link-order.sh check` reports.
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
