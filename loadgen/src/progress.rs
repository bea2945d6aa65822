//! Progress on long commands (`tandem dev` start-up, drills, the load
//! generator): drawn on stderr, and only when stdout is a terminal, so
//! scripts, pipes and tests see nothing of it.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn target() -> ProgressDrawTarget {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A spinner showing what is being done (`set_message` as it goes).
pub fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar over `length` of wall time that fills by itself (a run of load),
/// with a message for the phase.
pub fn timed(length: Duration, message: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(length.as_millis() as u64), target());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {elapsed:>4}/{duration:4} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message.to_string());
    let ticking = bar.clone();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        while !ticking.is_finished() {
            ticking.set_position(started.elapsed().as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    bar
}
