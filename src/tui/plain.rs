//! The plain front end: the game as a line REPL on stdin/stdout.

use crate::cli::Settings;

/// Runs the game as a plain REPL with an embedded node.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let _ = settings;
    anyhow::bail!("the plain front end is not built yet; run with --server-only")
}
