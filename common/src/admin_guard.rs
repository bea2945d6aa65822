//! The admin token check with a brake on guessing.
//!
//! An admin API (the router's, fault injection) checks each call's bearer
//! token ([`crate::auth::require_admin`]). On its own that lets a caller try
//! tokens as fast as the server answers. [`AdminGuard`] counts refused
//! calls in a fixed window; once [`MAX_FAILURES`] were refused within
//! [`WINDOW`], every call, right token or not, gets RESOURCE_EXHAUSTED until
//! the window ends, so a guesser cannot even learn when it guessed right.
//! An operator locked out by a guesser waits at most one window.
//!
//! States:
//! - **open**: calls are checked; a refused one is counted;
//! - **braking**: [`MAX_FAILURES`] refusals in the current window; every
//!   call is turned away until the window ends, then back to open with the
//!   count reset.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::auth::require_admin;

/// Refused calls tolerated per window.
pub const MAX_FAILURES: u32 = 10;

/// Length of the counting window (and of a lockout at most).
pub const WINDOW: Duration = Duration::from_secs(10);

/// Checks admin calls against one token, with the brake described above.
#[derive(Debug)]
pub struct AdminGuard {
    token: String,
    /// (start of the current window, refusals in it).
    window: Mutex<(Instant, u32)>,
}

impl AdminGuard {
    /// A guard for `token`.
    pub fn new(token: String) -> Self {
        Self {
            token,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Admits a call carrying the admin token; otherwise UNAUTHENTICATED
    /// (no token) or PERMISSION_DENIED (another token), and
    /// RESOURCE_EXHAUSTED for every call while braking.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(window.0) >= WINDOW {
            *window = (now, 0);
        }
        if window.1 >= MAX_FAILURES {
            let wait = WINDOW.saturating_sub(now.duration_since(window.0));
            return Err(Status::resource_exhausted(format!(
                "too many refused admin calls; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let verdict = require_admin(metadata, &self.token);
        if verdict.is_err() {
            window.1 += 1;
            if window.1 == MAX_FAILURES {
                tracing::warn!(
                    refused = MAX_FAILURES,
                    "admin API braking: too many refused calls; every call is refused until the window ends"
                );
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn bearer(token: &str) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert("authorization", format!("Bearer {token}").parse().unwrap());
        md
    }

    #[tokio::test(start_paused = true)]
    async fn guessing_brakes_every_call_until_the_window_ends() {
        let guard = AdminGuard::new("right".into());
        assert!(guard.check(&bearer("right")).is_ok());
        for _ in 0..MAX_FAILURES {
            let refused = guard.check(&bearer("wrong")).unwrap_err();
            assert_eq!(refused.code(), Code::PermissionDenied);
        }
        // Braking: even the right token is turned away.
        let braked = guard.check(&bearer("right")).unwrap_err();
        assert_eq!(braked.code(), Code::ResourceExhausted);
        assert!(braked.message().contains("try again in 10 s"), "{braked:?}");

        tokio::time::advance(WINDOW - Duration::from_millis(1)).await;
        assert_eq!(
            guard.check(&bearer("right")).unwrap_err().code(),
            Code::ResourceExhausted
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(guard.check(&bearer("right")).is_ok(), "open again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_mistakes_per_window_never_brake() {
        let guard = AdminGuard::new("right".into());
        for _ in 0..5 {
            for _ in 0..MAX_FAILURES - 1 {
                assert!(guard.check(&MetadataMap::new()).is_err());
            }
            assert!(guard.check(&bearer("right")).is_ok());
            tokio::time::advance(WINDOW).await;
        }
    }
}
