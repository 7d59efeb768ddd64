//! The plain front end: the game as a line REPL on stdin/stdout, for scripts, pipes and screen
//! readers, with its embedded node.
//!
//! Reads commands line by line and prints the game's lines as they come, background chat
//! included; story text has no pauses. On a terminal it shows the prompt after each command
//! and Ctrl-C interrupts a long action. When stdin is not a terminal (a script), there are no
//! prompts and each command waits for the previous one's long action (`mine 5`) to finish, so
//! a script reads like a transcript. Exits on `quit` or end of input, once the node has
//! flushed the world to disk. Node addresses go to stderr; stdout is the game's.
//!
//! With `--json` every event is written as one JSON object per line (`game::json`) instead,
//! for bots; there are no prompts then.
//!
//! Stdin is read on a thread of its own, so leaving never waits for a line that will not come
//! (a read blocked on a terminal would otherwise hold the runtime open until Enter).

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::cli::Settings;
use crate::game::events::{Activity, Event, Input, LineKind, Mode};
use crate::game::session::{self, SessionOptions};
use crate::tui::embed;

/// The comment line the front end sends after each command: its echo says the command has
/// been handled (the game ignores lines starting with `#`).
const SYNC_MARK: &str = "# plain: ready";

/// Inputs read ahead of the game before reading pauses.
const MAX_PENDING: usize = 64;

/// How the REPL writes events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Lines of text, and prompts on a terminal.
    Text,
    /// One JSON object per event.
    Json,
}

/// Runs the game as a plain REPL with an embedded node.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let (node, kv) = embed::start_node(&settings).await?;
    let tell_key = crate::game::tell::TellKey::load_or_create(&settings.node.world_dir)
        .map_err(|err| eprintln!("cmud: tells cannot be read on this node: {err}"))
        .ok();
    let options = SessionOptions {
        name: settings.name.clone(),
        no_pauses: true,
        tell_key: tell_key.map(std::sync::Arc::new),
        joins: settings.joins.clone(),
        remembered_peers: settings.profile.peers.clone(),
        ..SessionOptions::default()
    };
    let (inputs, events) = session::spawn(kv, options);
    let output = if settings.json {
        Output::Json
    } else {
        Output::Text
    };
    let interactive = std::io::stdin().is_terminal();
    let mut stdout = std::io::stdout();
    let result = drive(
        Game { inputs, events },
        stdin_reader(),
        &mut stdout,
        Frontend {
            interactive,
            output,
        },
        &mut |event| embed::remember(&mut settings, event),
    )
    .await;
    node.shutdown().await;
    result.map_err(Into::into)
}

/// Stdin as an async reader fed by a thread of its own: the thread stays blocked in its read
/// when the game ends, and the process exits without waiting for it.
fn stdin_reader() -> BufReader<tokio::io::DuplexStream> {
    use std::io::BufRead;
    use tokio::io::AsyncWriteExt;
    const PIPE_BYTES: usize = 64 * 1024;
    let (mut tx, rx) = tokio::io::duplex(PIPE_BYTES);
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if handle.block_on(tx.write_all(&line)).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` ends the reader's input.
    });
    BufReader::new(rx)
}

/// The session, as the REPL talks to it.
pub struct Game {
    /// Where inputs go.
    pub inputs: mpsc::Sender<Input>,
    /// Where events come from.
    pub events: mpsc::Receiver<Event>,
}

/// How the REPL behaves.
#[derive(Clone, Copy, Debug)]
pub struct Frontend {
    /// Whether stdin is a terminal: prompts, lines passed on at once, Ctrl-C handled.
    pub interactive: bool,
    /// Text or JSON.
    pub output: Output,
}

/// Where the REPL stands.
struct Repl {
    /// Whether prompts are shown and input is passed on at once (a terminal).
    interactive: bool,
    /// Text or JSON.
    output: Output,
    /// Whether Ctrl-C already interrupted the running action (a second one exits).
    interrupted: bool,
    /// The game's current prompt.
    mode: Mode,
    /// Sync marks sent whose echo has not come back yet.
    unacknowledged: usize,
    /// The long action running, if any.
    running: Option<Activity>,
    /// Whether stdin has ended.
    eof: bool,
    /// Whether `quit` was sent.
    quit_sent: bool,
    /// Whether the prompt is the last thing on the screen (a terminal only).
    prompt_visible: bool,
}

impl Repl {
    /// Whether prompts are shown (text on a terminal).
    fn prompts(&self) -> bool {
        self.interactive && self.output == Output::Text
    }

    /// Whether the next line of input may be read now.
    fn ready_for_input(&self) -> bool {
        !self.eof && (self.interactive || (self.unacknowledged == 0 && self.running.is_none()))
    }
}

/// Runs the REPL: lines from `reader` go to the game, its events are written to `out`, and
/// `remember` sees every event (to keep a chosen name in the profile). Returns when the game
/// quits.
pub async fn drive<R, W>(
    game: Game,
    mut reader: R,
    out: &mut W,
    frontend: Frontend,
    remember: &mut dyn FnMut(&Event),
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: Write,
{
    let Game { inputs, mut events } = game;
    let mut repl = Repl {
        interactive: frontend.interactive,
        output: frontend.output,
        interrupted: false,
        mode: Mode::Naming,
        unacknowledged: 1,
        running: None,
        eof: false,
        quit_sent: false,
        prompt_visible: false,
    };
    // Inputs wait here until the game takes them, so events are read all the while: awaiting
    // a full input channel instead would hang once the game itself waits for its events to be
    // read (a long paste of commands with long answers).
    let mut pending: VecDeque<Input> = VecDeque::new();
    // The first mark's echo comes once the greeting is done.
    pending.push_back(Input::Line(SYNC_MARK.to_owned()));
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            read = reader.read_until(b'\n', &mut buf),
                if repl.ready_for_input() && pending.len() < MAX_PENDING =>
            {
                if read? == 0 {
                    repl.eof = true;
                } else {
                    let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_owned();
                    pending.push_back(Input::Line(line));
                    pending.push_back(Input::Line(SYNC_MARK.to_owned()));
                    repl.unacknowledged += 1;
                    repl.prompt_visible = false;
                }
                buf.clear();
            }
            permit = inputs.reserve(), if !pending.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(input) = pending.pop_front() {
                        permit.send(input);
                    }
                }
                // The game has ended; its last events are still to be read.
                Err(_) => pending.clear(),
            },
            event = events.recv() => {
                let Some(event) = event else { return Ok(()) };
                remember(&event);
                if !show(&mut repl, &event, out)? {
                    return Ok(());
                }
                // Background news (chat, gifts) printed over the prompt: show it again.
                if repl.prompts() && !repl.prompt_visible && repl.unacknowledged == 0
                    && !repl.eof && events.is_empty()
                {
                    write!(out, "{}", repl.mode.prompt(repl.running))?;
                    out.flush()?;
                    repl.prompt_visible = true;
                }
            }
            _ = tokio::signal::ctrl_c(), if repl.interactive => {
                if repl.running.is_some() && !repl.interrupted {
                    // Ahead of any queued lines: it is meant for the action running now.
                    repl.interrupted = true;
                    pending.push_front(Input::Interrupt);
                } else if repl.running.is_some() || repl.quit_sent {
                    // A second Ctrl-C: leave at once.
                    out.flush()?;
                    return Ok(());
                } else {
                    repl.quit_sent = true;
                    pending.push_back(Input::Line("quit".into()));
                }
            }
        }
        if repl.eof
            && !repl.quit_sent
            && (repl.interactive || repl.unacknowledged == 0 && repl.running.is_none())
        {
            repl.quit_sent = true;
            pending.push_back(Input::Line("quit".to_owned()));
        }
    }
}

/// Writes one event; returns false when the game has quit.
fn show<W: Write>(repl: &mut Repl, event: &Event, out: &mut W) -> std::io::Result<bool> {
    match event {
        Event::Line(line) if line.kind == LineKind::Echo && line.text == SYNC_MARK => {
            repl.unacknowledged = repl.unacknowledged.saturating_sub(1);
            if repl.prompts() && repl.unacknowledged == 0 && !repl.eof {
                write!(out, "{}", repl.mode.prompt(repl.running))?;
                repl.prompt_visible = true;
            }
        }
        Event::Status(status) => repl.mode = status.mode,
        Event::Progress(progress) => {
            repl.running = progress.as_ref().map(|p| p.activity);
            repl.interrupted &= repl.running.is_some();
        }
        Event::Copy(_) if matches!(repl.output, Output::Text) => {
            // A line front end has no clipboard of its own: the address is on its own line.
            writeln!(
                out,
                "cmud --plain does not copy; select the address below instead."
            )?;
        }
        _ => {}
    }
    let shown = match (repl.output, event) {
        (_, Event::Line(line)) if line.kind == LineKind::Echo && line.text == SYNC_MARK => None,
        (Output::Json, event) => Some(crate::game::json::to_line(event)),
        (Output::Text, Event::Line(line)) if line.kind != LineKind::Echo => Some(line.text.clone()),
        (Output::Text, _) => None,
    };
    if let Some(text) = shown {
        if repl.prompt_visible {
            // Start below the prompt rather than after it.
            writeln!(out)?;
            repl.prompt_visible = false;
        }
        writeln!(out, "{text}")?;
    }
    out.flush()?;
    Ok(!matches!(event, Event::Quit))
}
