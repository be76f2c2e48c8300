//! Which log lines are written: the operator's choice (`ASSUME_ROLED_LOG`), under caps that no
//! choice can lift. A `Targets` filter (`level` or `target=level`, comma-separated) rather than
//! an env-filter: the daemon's lines need nothing more, and the env-filter's regular-expression
//! engine was half a megabyte of the binary, partly mapped into memory at start for a one-line
//! parse.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{ParseError, Targets};

/// Library targets whose verbose levels would log request signing details (which include the
/// host's session token): they stay at `info` whatever the operator asks for.
const SECRET_SAFE_CAPS: [&str; 8] = [
    "aws_sigv4",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
];

/// The operator's filter, read from `ASSUME_ROLED_LOG` syntax, e.g. `debug` or `info,audit=off`:
/// a level, or `target=level` pairs, comma-separated. Empty parts are skipped (`info,` is
/// `info`), and a part without `=` must be a level: a `Targets` filter would read `warning` as
/// a target shown at every level and everything else hidden, audit lines included.
pub fn wanted(directives: &str) -> Result<Targets, String> {
    let parts: Vec<&str> = (directives.split(',').map(str::trim))
        .filter(|part| !part.is_empty())
        .collect();
    let not_a_level = |part: &&&str| !part.contains('=') && part.parse::<LevelFilter>().is_err();
    if let Some(word) = parts.iter().find(not_a_level) {
        return Err(format!(
            "{word:?} is not a level (off, error, warn, info, debug, trace)"
        ));
    }
    (parts.join(",").parse()).map_err(|error: ParseError| error.to_string())
}

/// Every line passes except the capped targets' (and their modules') verbose levels. It is a
/// filter of its own, applied together with the operator's, so that no directive, however
/// specific (`aws_sigv4::sign=trace`), lifts a cap.
pub fn secret_safe_caps() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(SECRET_SAFE_CAPS.map(|target| (target, LevelFilter::INFO)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn passes(filter: &Targets, target: &str, level: Level) -> bool {
        filter.would_enable(target, &level)
    }

    #[test]
    fn the_documented_directives_parse() {
        let quiet_audit = wanted("info,audit=off").unwrap();
        assert!(passes(&quiet_audit, "assume_roled::daemon", Level::INFO));
        assert!(!passes(&quiet_audit, "assume_roled::daemon", Level::DEBUG));
        assert!(!passes(&quiet_audit, "audit", Level::INFO));
        let debug = wanted("info,assume_roled=debug").unwrap();
        assert!(passes(&debug, "assume_roled::refresh", Level::DEBUG));
        assert!(!passes(&debug, "aws_config", Level::DEBUG));
        assert!(passes(&wanted("trace").unwrap(), "anything", Level::TRACE));
    }

    #[test]
    fn a_malformed_filter_is_an_error() {
        assert!(wanted("info,audit=loud").is_err());
        assert!(wanted("[span{field=1}]=debug").is_err());
        // Read as targets, these would hide every line but their own.
        assert!(wanted("warning").is_err());
        assert!(wanted("info,verbose").is_err());
    }

    /// An empty part, as a trailing comma leaves, is nothing: parsed, it would be `error` and
    /// replace the level before it.
    #[test]
    fn empty_parts_are_skipped() {
        for directives in ["info,", "info,,audit=off", " info , "] {
            let filter = wanted(directives).unwrap();
            assert!(passes(&filter, "assume_roled", Level::INFO), "{directives}");
        }
        assert!(!passes(
            &wanted("info,,audit=off").unwrap(),
            "audit",
            Level::INFO
        ));
    }

    #[test]
    fn the_caps_hold_a_capped_target_and_its_modules_at_info() {
        let caps = secret_safe_caps();
        for target in [
            "aws_sigv4",
            "aws_sigv4::http_request::sign",
            "hyper::proto",
            "rustls",
        ] {
            assert!(passes(&caps, target, Level::INFO), "{target}");
            assert!(!passes(&caps, target, Level::DEBUG), "{target}");
        }
        assert!(passes(&caps, "assume_roled::sts", Level::TRACE));
        assert!(passes(&caps, "aws_config", Level::TRACE));
    }
}
