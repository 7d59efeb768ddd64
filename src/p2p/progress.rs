//! Showing a large bootstrap's progress on a headless node: an `indicatif` bar when stderr is
//! a terminal, a log line every few seconds otherwise (the TUI shows its own).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::{NetworkHandle, SyncProgress};

/// How often progress is logged when stderr is not a terminal.
const LOG_PERIOD: Duration = Duration::from_secs(2);

/// Shows the progress of every large bootstrap until the network stops. Spawn it.
pub async fn show(network: NetworkHandle) {
    let mut progress = network.sync_progress();
    let tty = std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    let mut last_log: Option<tokio::time::Instant> = None;
    while progress.changed().await.is_ok() {
        let SyncProgress {
            active,
            received,
            total,
        } = *progress.borrow_and_update();
        if tty {
            let shown = bar.get_or_insert_with(|| new_bar(total));
            shown.set_length(total.max(received));
            shown.set_position(received);
            if !active {
                shown.finish_with_message("world received");
                bar = None;
            }
        } else if !active {
            last_log = None;
            tracing::info!(received, "world received");
        } else if last_log.is_none_or(|at| at.elapsed() >= LOG_PERIOD) {
            last_log = Some(tokio::time::Instant::now());
            tracing::info!(received, total, "receiving the world");
        }
    }
}

fn new_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "receiving the world {bar:40} {human_pos}/{human_len} entries, {eta} left {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}
