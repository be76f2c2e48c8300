//! Configuration parsing: any text is either a valid `Config` or a list of problems that each
//! name a line inside the text, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = assume_roled::config::from_toml(text, "fuzz-host") {
        let lines = text.lines().count().max(1) + 1;
        assert!(!problems.is_empty());
        assert!(
            problems.iter().all(|p| p.line >= 1 && p.line <= lines),
            "{problems:?}"
        );
    }
});
