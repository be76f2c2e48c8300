//! The wall clock, as a seam: credentials expire at wall-clock times, and tests substitute a
//! clock they can move (or jump, like a laptop resumed from suspend).

use std::sync::Arc;
use std::time::SystemTime;

/// The source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// How every part of the daemon holds the clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl SystemClock {
    /// The system clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}
