//! What the metadata guard's watch (`assume-roled guard watch`) last found, as it writes it to a
//! small state file for the daemon's metrics, `status` and `check`: whether what the
//! configuration asks of the guard is in place, whether the lockdown is, and how often the
//! table was put back. A file, not a socket: the watch runs as root, the daemon as its own
//! user without capabilities, and neither needs to reach the other.

use std::path::PathBuf;

/// Where the watch writes what it found, unless `ASSUME_ROLED_GUARD_STATE` says otherwise.
const DEFAULT_STATE_FILE: &str = "/run/assume-roled-guard/state";

/// The state file's path.
pub fn state_file() -> PathBuf {
    std::env::var_os("ASSUME_ROLED_GUARD_STATE")
        .map_or_else(|| PathBuf::from(DEFAULT_STATE_FILE), PathBuf::from)
}

/// What the watch last found, as the state file says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuardState {
    /// What the configuration asks of the guard is in place: its table, or none when it asks
    /// for none (the lockdown does not count).
    pub in_place: bool,
    /// The lockdown rules are in place.
    pub lockdown: bool,
    /// How often the table was put back since the watch started.
    pub reapplied: u64,
}

impl GuardState {
    /// The state file's text.
    pub fn render(&self) -> String {
        format!(
            "in_place {}\nlockdown {}\nreapplied {}\n",
            u8::from(self.in_place),
            u8::from(self.lockdown),
            self.reapplied
        )
    }

    /// The state in `text`; `None` when it is not a state file.
    pub fn parse(text: &str) -> Option<Self> {
        let mut state = GuardState::default();
        let mut seen = 0;
        for line in text.lines() {
            let (key, value) = line.split_once(' ')?;
            match key {
                "in_place" => state.in_place = value == "1",
                "lockdown" => state.lockdown = value == "1",
                "reapplied" => state.reapplied = value.parse().ok()?,
                _ => continue,
            }
            seen += 1;
        }
        (seen == 3).then_some(state)
    }

    /// One line for people (`status`, `check`).
    pub fn describe(&self) -> String {
        let kept = match self.reapplied {
            0 => String::new(),
            1 => ", put back once".to_owned(),
            n => format!(", put back {n} times"),
        };
        match (self.in_place, self.lockdown) {
            (true, _) => format!("metadata guard: in place{kept}"),
            (false, true) => format!(
                "metadata guard: LOCKDOWN (the configuration cannot be used; metadata refused to \
                 all but root and the daemon's user){kept}"
            ),
            (false, false) => {
                format!("metadata guard: NOT in place (see journalctl -u assume-roled-guard){kept}")
            }
        }
    }

    /// The state the watch last wrote, if a watch runs (or ran) on this host.
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string(state_file()).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trip() {
        let state = GuardState {
            in_place: true,
            lockdown: false,
            reapplied: 17,
        };
        assert_eq!(GuardState::parse(&state.render()), Some(state));
        assert_eq!(GuardState::parse("in_place 1\n"), None, "incomplete");
        assert_eq!(GuardState::parse("nonsense"), None);
    }
}
