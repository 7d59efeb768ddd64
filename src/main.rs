//! The `cmud` binary: reads flags and settings, sets up logging, and runs one front end (the
//! terminal UI, the plain REPL, or a headless node).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cmud::admin;
use cmud::cli::{Cli, Command, FrontEnd, Settings};
use cmud::node::Node;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.settings() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("cmud: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(command) = &cli.command {
        return run_tool(command, &settings);
    }
    if cli.print_rpc_token {
        return print_rpc_token(&settings.node.world_dir);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cmud: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cmud: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cmud check`, `export` or `import` on the world of `settings`.
fn run_tool(command: &Command, settings: &Settings) -> ExitCode {
    let dir = &settings.node.world_dir;
    let world = &settings.node.world;
    let limits = &settings.node.limits;
    let result = match command {
        Command::Check => admin::check(dir, world, limits).map(|report| {
            print!("{report}");
            report.problems.is_empty()
        }),
        Command::Export { prefix, output } => {
            export(dir, world, prefix, output.as_deref()).map(|n| {
                eprintln!("cmud: exported {n} entries");
                true
            })
        }
        Command::Import { file } => admin::import(dir, world, file, limits).map(|report| {
            eprintln!(
                "cmud: read {} entries: {} merged, {} already there at the same or a newer \
                 version, {} tombstones past tombstone_ttl left out",
                report.read, report.merged, report.unchanged, report.expired
            );
            true
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("cmud: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `--print-rpc-token`: the token of the world's RPC port, for scripts.
fn print_rpc_token(world_dir: &Path) -> ExitCode {
    let path = world_dir.join(cmud::rpc::auth::TOKEN_FILE);
    let token = std::fs::create_dir_all(world_dir)
        .and_then(|()| cmud::rpc::auth::load_or_create_token(&path));
    match token {
        Ok(token) => {
            println!("{}", token.expose());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("cmud: {}: {err}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn export(
    dir: &Path,
    world: &str,
    prefix: &str,
    output: Option<&Path>,
) -> Result<usize, admin::AdminError> {
    match output {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|source| admin::AdminError::Io {
                path: path.to_owned(),
                source,
            })?;
            admin::export(
                dir,
                world,
                prefix.as_bytes(),
                &mut std::io::BufWriter::new(file),
            )
        }
        None => admin::export(dir, world, prefix.as_bytes(), &mut std::io::stdout().lock()),
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    match settings.front_end {
        FrontEnd::ServerOnly => {
            init_logging_to_stderr();
            server_only(settings).await
        }
        FrontEnd::Plain => {
            init_logging_to_file(&settings.node.world_dir)?;
            cmud::tui::plain::run(settings).await
        }
        FrontEnd::Tui => {
            init_logging_to_file(&settings.node.world_dir)?;
            cmud::tui::run(settings).await
        }
    }
}

/// A headless node: serves the world until SIGINT or SIGTERM, then flushes and exits.
async fn server_only(settings: Settings) -> anyhow::Result<()> {
    let node = Node::start(settings.node).await?;
    println!("rpc listening on {}", node.rpc_addr());
    for addr in node.shareable_addrs() {
        println!("listening on {addr}");
    }
    if let Some(network) = node.network() {
        tokio::spawn(cmud::p2p::progress::show(network.clone()));
    }
    tracing::info!(peer_id = node.peer_id(), "node started");
    wait_for_signal().await?;
    tracing::info!("shutting down: flushing the world to disk");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

/// The default log filter. AutoNAT's probes of addresses behind a NAT time out by design, and
/// libp2p warns about each one: those stay out of the log unless asked for.
fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,libp2p_kad=error,libp2p_autonat=error"))
}

fn init_logging_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Logs go to `cmud.log` in the world's folder: the screen belongs to the game.
fn init_logging_to_file(world_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(world_dir)
        .with_context(|| format!("creating {}", world_dir.display()))?;
    let path = world_dir.join("cmud.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(())
}
