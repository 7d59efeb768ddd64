//! Front ends: the ratatui terminal UI and the plain line REPL ([`plain`]).

pub mod embed;
pub mod plain;

use crate::cli::Settings;

/// Runs the game in the terminal UI with an embedded node.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let _ = settings;
    anyhow::bail!("the terminal UI is not built yet; run with --server-only")
}
