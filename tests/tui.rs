//! The terminal UI: key and game events against the model, `TestBackend` snapshots of the
//! screens, the event loop driven with synthetic terminal events, and one end-to-end run of the
//! real binary in tmux.

#[path = "tui/friends.rs"]
mod friends;
#[path = "tui/support.rs"]
mod support;
#[path = "tui/tmux.rs"]
mod tmux;

use std::io;
use std::time::Duration;

use cmud::game::events::{Activity, Event, Input, Line, LineKind, Mode, Progress, SyncState};
use cmud::tui::app::{App, Command};
use cmud::tui::runner::{self, GameLink, Host};
use cmud::tui::theme::Theme;
use crossterm::event::{Event as TermEvent, KeyCode, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tokio::sync::mpsc;

use support::*;

// ---- keys -> model ----------------------------------------------------------------------

#[test]
fn up_and_down_walk_history_and_return_to_the_draft() {
    let mut app = playing();
    enter_line(&mut app, "mine 3");
    enter_line(&mut app, "stats");
    type_text(&mut app, "dra");
    app.on_key(press(KeyCode::Up));
    assert_eq!(app.input.text(), "stats");
    app.on_key(press(KeyCode::Up));
    assert_eq!(app.input.text(), "mine 3");
    app.on_key(press(KeyCode::Up));
    assert_eq!(app.input.text(), "mine 3", "stops at the oldest line");
    app.on_key(press(KeyCode::Down));
    assert_eq!(app.input.text(), "stats");
    app.on_key(press(KeyCode::Down));
    assert_eq!(app.input.text(), "dra");
}

#[test]
fn enter_sends_the_line_and_records_it() {
    let mut app = playing();
    let commands = enter_line(&mut app, "say hi there");
    assert_eq!(
        commands,
        [Command::Send(Input::Line("say hi there".into()))]
    );
    assert!(app.input.is_empty());
    assert_eq!(app.input.history(), ["say hi there"]);
    assert!(
        app.on_key(press(KeyCode::Enter)).is_empty(),
        "blank line sends nothing"
    );
}

#[test]
fn tab_completes_commands_then_cycles_and_knows_arguments() {
    let mut app = playing();
    type_text(&mut app, "mi");
    app.on_key(press(KeyCode::Tab));
    assert_eq!(
        app.input.text(),
        "mine ",
        "a sole candidate is completed with a space"
    );

    app.input.clear();
    type_text(&mut app, "sh");
    app.on_key(press(KeyCode::Tab));
    assert_eq!(app.input.text(), "shop");
    app.on_key(press(KeyCode::Tab));
    assert_eq!(app.input.text(), "shout");
    app.on_key(press(KeyCode::BackTab));
    assert_eq!(app.input.text(), "shop");
    app.on_key(press(KeyCode::Char(' ')));
    assert!(app.completion.is_none(), "typing ends the cycle");

    for (typed, expected) in [
        ("buy q", "buy quantum "),
        ("give b", "give bob "),
        ("move f", "move fence "),
    ] {
        app.input.clear();
        type_text(&mut app, typed);
        app.on_key(press(KeyCode::Tab));
        assert_eq!(app.input.text(), expected);
    }
}

#[test]
fn tab_in_battle_offers_battle_commands() {
    let mut app = playing();
    app.on_game(Event::Status(status(Mode::Solving)));
    type_text(&mut app, "re");
    app.on_key(press(KeyCode::Tab));
    assert_eq!(app.input.text(), "resign ");
}

fn fill_log(app: &mut App, n: usize) {
    for i in 0..n {
        say(app, LineKind::Info, &format!("output {i}"));
    }
}

#[test]
fn page_up_is_not_yanked_back_by_new_output() {
    let mut app = playing();
    app.resize(80, 24);
    fill_log(&mut app, 100);
    app.on_key(press(KeyCode::PageUp));
    let reading = bottom_line(&app);
    assert_ne!(reading, "output 99");
    say(&mut app, LineKind::Info, "bob arrives");
    assert_eq!(
        bottom_line(&app),
        reading,
        "new output does not move the view"
    );
    assert_eq!(app.log.below(), app.page_rows() + 1);
    app.on_key(press(KeyCode::PageDown));
    assert_eq!(
        bottom_line(&app),
        "output 99",
        "a page down, not to the end"
    );
    app.on_key(press(KeyCode::PageDown));
    assert!(app.log.is_following());
    assert_eq!(bottom_line(&app), "bob arrives");
}

#[test]
fn shift_and_alt_arrows_scroll_one_line_and_end_returns() {
    let mut app = playing();
    fill_log(&mut app, 50);
    app.on_key(press_with(KeyCode::Up, KeyModifiers::SHIFT));
    assert_eq!(bottom_line(&app), "output 48");
    app.on_key(press_with(KeyCode::Up, KeyModifiers::ALT));
    assert_eq!(bottom_line(&app), "output 47");
    say(&mut app, LineKind::Info, "later");
    assert_eq!(bottom_line(&app), "output 47");
    assert!(app.input.is_empty(), "scroll keys are not history keys");
    app.on_key(press_with(KeyCode::Down, KeyModifiers::SHIFT));
    assert_eq!(bottom_line(&app), "output 48");
    app.on_key(press(KeyCode::End));
    assert_eq!(bottom_line(&app), "later");
}

#[test]
fn sending_a_line_jumps_back_to_the_newest_output() {
    let mut app = playing();
    fill_log(&mut app, 50);
    app.on_key(press(KeyCode::PageUp));
    assert!(!app.log.is_following());
    enter_line(&mut app, "stats");
    assert!(app.log.is_following());
}

#[test]
fn f1_or_question_mark_opens_help_and_esc_closes_it() {
    let mut app = playing();
    app.on_key(press(KeyCode::F(1)));
    assert!(app.help_open());
    type_text(&mut app, "x");
    assert!(app.input.is_empty(), "keys do not leak through the overlay");
    app.on_key(press(KeyCode::Esc));
    assert!(!app.help_open());

    app.on_key(press(KeyCode::Char('?')));
    assert!(app.help_open(), "? on an empty line opens help");
    app.on_key(press(KeyCode::Char('?')));
    assert!(!app.help_open());

    type_text(&mut app, "say why?");
    assert!(!app.help_open(), "? inside a line is just typed");
    assert_eq!(app.input.text(), "say why?");
}

#[test]
fn ctrl_c_quits_even_from_the_help_overlay() {
    let mut app = playing();
    app.on_key(press(KeyCode::F(1)));
    let commands = app.on_key(press_with(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(commands, [Command::Quit]);
    assert!(app.quitting);
}

#[test]
fn key_releases_are_ignored() {
    let mut app = playing();
    type_text(&mut app, "mine");
    for code in [
        KeyCode::Char('x'),
        KeyCode::Enter,
        KeyCode::F(1),
        KeyCode::Backspace,
        KeyCode::PageUp,
    ] {
        assert!(app.on_key(release(code)).is_empty());
    }
    assert_eq!(app.input.text(), "mine");
    assert!(!app.help_open());
    assert!(app.log.is_following());
}

#[test]
fn enter_or_esc_skips_story_text() {
    let mut app = playing();
    progress(&mut app, Activity::Story, 0, 0);
    assert_eq!(
        app.on_key(press(KeyCode::Enter)),
        [Command::Send(Input::Interrupt)]
    );
    assert_eq!(
        app.on_key(press(KeyCode::Esc)),
        [Command::Send(Input::Interrupt)]
    );
    app.on_game(Event::Progress(None));
    assert!(app.on_key(press(KeyCode::Enter)).is_empty());
    assert!(app.on_key(press(KeyCode::Esc)).is_empty());
}

#[test]
fn esc_clears_a_typed_line_before_it_stops_anything() {
    let mut app = playing();
    progress(&mut app, Activity::Mining, 1, 3);
    type_text(&mut app, "say oops");
    assert!(app.on_key(press(KeyCode::Esc)).is_empty());
    assert!(app.input.is_empty());
    assert_eq!(
        app.on_key(press(KeyCode::Esc)),
        [Command::Send(Input::Interrupt)]
    );
}

#[test]
fn typing_stays_live_during_a_long_action() {
    let mut app = playing();
    progress(&mut app, Activity::Mining, 1, 3);
    assert_eq!(
        enter_line(&mut app, "say still here"),
        [Command::Send(Input::Line("say still here".into()))]
    );
    assert_eq!(
        app.on_key(press(KeyCode::Esc)),
        [Command::Send(Input::Interrupt)],
        "Esc stops the long action"
    );
}

#[test]
fn every_name_attempt_goes_to_the_game_and_the_line_is_cleared() {
    let mut app = App::new(Theme::colored());
    assert_eq!(app.mode(), Mode::Naming);
    for attempt in ["two words", &"x".repeat(30), "b@d", "ada"] {
        assert_eq!(
            enter_line(&mut app, &format!(" {attempt} ")),
            [Command::Send(Input::Line(attempt.to_owned()))],
            "the game's one rule decides"
        );
        assert!(app.input.is_empty(), "a refused name does not stay");
    }
    assert!(app.input.history().is_empty(), "names are not history");
}

#[test]
fn what_the_game_learns_is_handed_on_to_be_remembered() {
    let mut app = playing();
    for event in [
        Event::NameChosen("ada".into()),
        Event::PeerJoined("/ip4/127.0.0.1/tcp/7441".into()),
    ] {
        assert_eq!(app.on_game(event.clone()), [Command::Remember(event)]);
    }
    assert_eq!(app.on_game(Event::Quit), [Command::Quit]);
}

#[test]
fn mouse_capture_is_off_until_toggled_and_the_wheel_scrolls() {
    let mut app = playing();
    assert!(!app.mouse_capture);
    assert_eq!(
        app.on_key(press(KeyCode::F(2))),
        [Command::SetMouseCapture(true)]
    );
    fill_log(&mut app, 30);
    let wheel = |kind| MouseEvent {
        kind,
        column: 5,
        row: 5,
        modifiers: KeyModifiers::NONE,
    };
    app.on_mouse(wheel(MouseEventKind::ScrollUp));
    assert_eq!(bottom_line(&app), "output 26");
    app.on_mouse(wheel(MouseEventKind::ScrollDown));
    assert!(app.log.is_following());
    assert_eq!(
        app.on_key(press(KeyCode::F(2))),
        [Command::SetMouseCapture(false)]
    );
}

#[test]
fn control_keys_edit_and_altgr_characters_are_typed() {
    let mut app = playing();
    type_text(&mut app, "say hello there");
    app.on_key(press_with(KeyCode::Char('w'), KeyModifiers::CONTROL));
    assert_eq!(app.input.text(), "say hello ");
    let altgr = KeyModifiers::CONTROL | KeyModifiers::ALT;
    app.on_key(press_with(KeyCode::Char('@'), altgr));
    assert_eq!(app.input.text(), "say hello @");
    app.on_key(press_with(KeyCode::Char('u'), KeyModifiers::CONTROL));
    assert!(app.input.is_empty());
}

#[test]
fn a_paste_lands_on_the_input_line_as_one_line() {
    let mut app = playing();
    type_text(&mut app, "join ");
    app.on_terminal(TermEvent::Paste("/ip4/1.2.3.4/tcp/7441\n".into()));
    assert_eq!(app.input.text(), "join /ip4/1.2.3.4/tcp/7441 ");
}

// ---- screens ----------------------------------------------------------------------------

fn first_run() -> App {
    let mut app = App::new(Theme::colored());
    app.on_game(Event::Status(cmud::game::events::Status::default()));
    say(
        &mut app,
        LineKind::Story,
        "Welcome to CMUD, the Carnegie Mellon MUD.",
    );
    say(&mut app, LineKind::Info, "What shall we call you?");
    type_text(&mut app, "ad");
    app
}

fn main_screen() -> App {
    let mut app = playing();
    app.note(
        LineKind::Event,
        "Friends can join you with cmud --join and one of these (F4 shows them, c copies):",
    );
    app.note(LineKind::Address, support::ADDRESS);
    for (kind, text) in [
        (LineKind::Echo, "stats"),
        (LineKind::Info, "ada, Undergraduate: 120 coins, power 3."),
        (LineKind::Echo, "mine 2"),
        (LineKind::Event, "--- Mining bitcoin [1/2]... ---"),
        (LineKind::Event, "--- Mining bitcoin [2/2]... ---"),
        (LineKind::Info, "You mined 6 coins."),
        (LineKind::Echo, "buy cpu"),
        (LineKind::Error, "You can't afford that."),
        (LineKind::Chat, "bob says: welcome to the Fence, ada!"),
    ] {
        say(&mut app, kind, text);
    }
    type_text(&mut app, "say thanks");
    app
}

fn battle() -> App {
    let mut app = playing();
    app.on_game(Event::Status(status(Mode::Solving)));
    for (kind, text) in [
        (LineKind::Echo, "solve"),
        (
            LineKind::Story,
            "The problem of your rank rises before you: sort a billion numbers.",
        ),
        (
            LineKind::Event,
            "You attack with 3 power. The problem has 7 steps left.",
        ),
    ] {
        say(&mut app, kind, text);
    }
    app.on_game(Event::Progress(Some(Progress {
        activity: Activity::Solving,
        done: 3,
        total: 10,
    })));
    app
}

fn snapshot(name: &str, app: &mut App, columns: u16, rows: u16) {
    let terminal = draw(app, columns, rows);
    insta::assert_snapshot!(format!("{name}_{columns}x{rows}"), terminal.backend());
}

#[test]
fn snapshot_first_run() {
    for (columns, rows) in [(80, 24), (120, 40)] {
        snapshot("first_run", &mut first_run(), columns, rows);
    }
}

#[test]
fn snapshot_main_screen_after_a_few_commands() {
    for (columns, rows) in [(80, 24), (120, 40)] {
        snapshot("main_screen", &mut main_screen(), columns, rows);
    }
}

#[test]
fn snapshot_help_overlay() {
    for (columns, rows) in [(80, 24), (120, 40)] {
        let mut app = main_screen();
        app.on_key(press(KeyCode::F(1)));
        snapshot("help", &mut app, columns, rows);
    }
}

#[test]
fn snapshot_battle_with_progress() {
    for (columns, rows) in [(80, 24), (120, 40)] {
        snapshot("battle", &mut battle(), columns, rows);
    }
}

#[test]
fn snapshot_too_small_terminal() {
    snapshot("too_small", &mut main_screen(), 30, 8);
}

#[test]
fn status_bar_warns_about_the_clock_and_shows_sync() {
    let mut app = playing();
    let mut bad = status(Mode::Mining);
    bad.clock_warning = true;
    bad.clock_offset_ms = -93_500;
    bad.sync = SyncState::Pending(12);
    bad.peers = 1;
    app.on_game(Event::Status(bad));
    let screen = screen_text(&draw(&mut app, 120, 40));
    let bar = screen.lines().next().unwrap_or_default();
    assert!(bar.contains("CLOCK OFF BY 93.5s"), "{bar}");
    assert!(bar.contains("12 pending"), "{bar}");
    assert!(bar.contains("1 peer "), "{bar}");
}

#[test]
fn scrolled_up_log_says_how_much_is_below() {
    let mut app = playing();
    fill_log(&mut app, 60);
    app.on_key(press_with(KeyCode::Up, KeyModifiers::SHIFT));
    say(&mut app, LineKind::Info, "newer");
    let screen = screen_text(&draw(&mut app, 80, 24));
    assert!(screen.contains("2 newer lines below"), "{screen}");
    assert!(screen.contains("output 58"), "{screen}");
    assert!(
        !screen.lines().any(|row| row.starts_with("newer ")),
        "the newest line is below the view:\n{screen}"
    );
}

#[test]
fn lines_are_coloured_by_kind_unless_no_color() {
    let find = |app: &mut App, text: &str| {
        let terminal = draw(app, 80, 24);
        let buffer = terminal.backend().buffer().clone();
        let screen = screen_text(&terminal);
        let row = screen
            .lines()
            .position(|l| l.contains(text))
            .expect("line shown");
        buffer[(0, row as u16)].fg
    };
    let mut colored = playing();
    say(&mut colored, LineKind::Error, "broke");
    say(&mut colored, LineKind::Chat, "chatted");
    let error = find(&mut colored, "broke");
    let chat = find(&mut colored, "chatted");
    assert_ne!(error, chat);

    let mut plain = App::new(Theme::plain());
    plain.on_game(Event::Status(status(Mode::Mining)));
    say(&mut plain, LineKind::Error, "broke");
    say(&mut plain, LineKind::Chat, "chatted");
    assert_eq!(find(&mut plain, "broke"), ratatui::style::Color::Reset);
    assert_eq!(find(&mut plain, "chatted"), ratatui::style::Color::Reset);
}

#[test]
fn resizing_redraws_at_the_new_size_without_losing_output() {
    let mut app = main_screen();
    for (columns, rows) in [(80, 24), (30, 8), (45, 12), (200, 60), (80, 24)] {
        let screen = screen_text(&draw(&mut app, columns, rows));
        if app.too_small() {
            assert!(screen.contains("too small"), "{screen}");
        } else {
            assert!(screen.contains("welcome to"), "{columns}x{rows}:\n{screen}");
        }
    }
}

// ---- the event loop ---------------------------------------------------------------------

#[derive(Default)]
struct RecordingHost {
    remembered: Vec<Event>,
    mouse: Vec<bool>,
    written: Vec<u8>,
    shown_outside: Vec<String>,
}

impl Host for RecordingHost {
    fn remember(&mut self, event: &Event) {
        self.remembered.push(event.clone());
    }

    fn set_mouse_capture(&mut self, on: bool) -> io::Result<()> {
        self.mouse.push(on);
        Ok(())
    }

    fn write_to_terminal(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.written.extend_from_slice(bytes);
        Ok(())
    }

    fn show_outside(&mut self, text: &str) -> io::Result<()> {
        self.shown_outside.push(text.to_owned());
        Ok(())
    }

    fn come_back(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn key_event(code: KeyCode) -> io::Result<TermEvent> {
    Ok(TermEvent::Key(press(code)))
}

/// Plays the game's side of the contract: names the player, echoes lines, quits on `quit`.
async fn scripted_game(
    mut input: mpsc::Receiver<Input>,
    events: mpsc::Sender<Event>,
) -> Vec<Input> {
    let mut seen = Vec::new();
    let _ = events.send(Event::Status(Default::default())).await;
    while let Some(line) = input.recv().await {
        seen.push(line.clone());
        let Input::Line(text) = line else { continue };
        if seen.len() == 1 {
            let _ = events.send(Event::NameChosen(text.clone())).await;
            let _ = events
                .send(Event::Status(support::status(Mode::Mining)))
                .await;
        } else if text == "quit" {
            let _ = events.send(Event::Quit).await;
        } else {
            let reply = Line::new(LineKind::Info, format!("you typed {text}"));
            let _ = events.send(Event::Line(reply)).await;
        }
    }
    seen
}

#[tokio::test]
async fn the_loop_carries_keys_to_the_game_and_the_game_to_the_screen() {
    let (input_tx, input_rx) = mpsc::channel(64);
    let (event_tx, event_rx) = mpsc::channel(256);
    let game = tokio::spawn(scripted_game(input_rx, event_tx));
    let (keys_tx, keys_rx) = futures::channel::mpsc::unbounded();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test terminal");
    let mut app = App::new(Theme::colored());
    let mut host = RecordingHost::default();
    let typing = async {
        for code in "ada".chars().map(KeyCode::Char).chain([KeyCode::Enter]) {
            keys_tx
                .unbounded_send(key_event(code))
                .expect("loop listening");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for code in "mine 2"
            .chars()
            .map(KeyCode::Char)
            .chain([KeyCode::Enter, KeyCode::F(2)])
        {
            keys_tx
                .unbounded_send(key_event(code))
                .expect("loop listening");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for code in "quit".chars().map(KeyCode::Char).chain([KeyCode::Enter]) {
            keys_tx
                .unbounded_send(key_event(code))
                .expect("loop listening");
        }
    };
    let link = GameLink {
        input: input_tx,
        events: event_rx,
    };
    let run = runner::run_loop(
        &mut terminal,
        &mut app,
        keys_rx,
        link,
        &mut host,
        std::future::pending(),
    );
    let (result, ()) =
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(run, typing) })
            .await
            .expect("the loop ends when the game quits");
    result.expect("the loop runs cleanly");
    assert!(app.quitting);
    assert_eq!(host.remembered, [Event::NameChosen("ada".into())]);
    assert_eq!(host.mouse, [true]);
    let seen = tokio::time::timeout(Duration::from_secs(30), game)
        .await
        .expect("the game ends when the UI is gone")
        .expect("game task");
    assert_eq!(
        seen,
        [
            Input::Line("ada".into()),
            Input::Line("mine 2".into()),
            Input::Line("quit".into()),
        ]
    );
    let screen = screen_text(&terminal);
    assert!(screen.contains("you typed mine 2"), "{screen}");
    assert!(screen.starts_with(" ada"), "{screen}");
}

/// Runs the loop with no stop signal until it ends by itself (the game quits or goes away),
/// within a generous deadline.
async fn run_until_it_ends(
    terminal: &mut Terminal<TestBackend>,
    app: &mut App,
    keys: futures::channel::mpsc::UnboundedReceiver<io::Result<TermEvent>>,
    game: GameLink,
    host: &mut RecordingHost,
) {
    let run = runner::run_loop(terminal, app, keys, game, host, std::future::pending());
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the loop ends by itself")
        .expect("clean end");
}

#[tokio::test]
async fn the_loop_ends_when_the_game_goes_away_or_on_stop() {
    let (input_tx, _input_rx) = mpsc::channel(4);
    let (event_tx, event_rx) = mpsc::channel(4);
    drop(event_tx);
    let (_keys_tx, keys_rx) = futures::channel::mpsc::unbounded::<io::Result<TermEvent>>();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test terminal");
    let mut app = App::new(Theme::colored());
    let mut host = RecordingHost::default();
    let link = GameLink {
        input: input_tx,
        events: event_rx,
    };
    run_until_it_ends(&mut terminal, &mut app, keys_rx, link, &mut host).await;

    let (input_tx, _input_rx) = mpsc::channel(4);
    let (_event_tx, event_rx) = mpsc::channel(4);
    let (_keys_tx, keys_rx) = futures::channel::mpsc::unbounded::<io::Result<TermEvent>>();
    let mut app = App::new(Theme::colored());
    let link = GameLink {
        input: input_tx,
        events: event_rx,
    };
    let run = runner::run_loop(
        &mut terminal,
        &mut app,
        keys_rx,
        link,
        &mut host,
        tokio::time::sleep(Duration::from_millis(50)),
    );
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the stop signal ends the loop")
        .expect("clean end");
}

// ---- the real binary --------------------------------------------------------------------

/// Generous: a debug binary on a loaded 2-core machine.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn broken_config_names_the_file_and_line_and_is_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.ron");
    let broken = "(\n    world: \"cmud\",\n    rpc_port: nope,\n)\n";
    std::fs::write(&config, broken).expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cmud"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--no-mdns")
        .output()
        .expect("run cmud");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3:", config.display())),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&config).expect("config"), broken);
    assert!(!dir.path().join("profile.ron").exists());
}

/// The log rows of a screen: all but the status bar and the input line with its border.
fn log_rows(screen: &str) -> Vec<String> {
    let rows: Vec<String> = screen.lines().map(str::to_owned).collect();
    rows.get(1..rows.len().saturating_sub(2))
        .map(<[String]>::to_vec)
        .unwrap_or_default()
}

/// Sends `command` and waits until the game has answered: the input line is empty again and
/// the log changed (whatever the game says; the UI does not know its rules).
fn send_command(tmux: &tmux::Tmux, command: &str) {
    let before = log_rows(&tmux.screen());
    tmux.key("Enter");
    tmux.wait_for(
        &format!("the game answering {command}"),
        SCREEN_TIMEOUT,
        |s| {
            let input_empty = s.lines().any(|row| row.trim_end() == ">");
            input_empty && log_rows(s) != before
        },
    );
}

/// Whether the input line (the last row) shows the idle main prompt, `> `.
fn at_main_prompt(screen: &str) -> bool {
    screen
        .lines()
        .rev()
        .find(|row| !row.trim().is_empty())
        .is_some_and(|row| row.trim_end() == ">" || row.starts_with("> "))
}

fn quote(path: &std::path::Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(unix)]
#[test]
fn plays_in_a_real_terminal_under_tmux() {
    let home = tempfile::tempdir().expect("temp home");
    let config_home = home.path().join("config");
    let data_home = home.path().join("data");
    let exit_file = home.path().join("exit-code");
    let script = format!(
        "env -u NO_COLOR HOME={home} XDG_CONFIG_HOME={config} XDG_DATA_HOME={data} {bin} \
         --no-mdns --listen /ip4/127.0.0.1/tcp/0 --rpc-port 0; \
         echo $? > {exit}; echo CMUD-EXITED; sleep 60",
        home = quote(home.path()),
        config = quote(&config_home),
        data = quote(&data_home),
        bin = quote(std::path::Path::new(env!("CARGO_BIN_EXE_cmud"))),
        exit = quote(&exit_file),
    );
    let tmux = tmux::Tmux::start(&script, 100, 30);

    // First run: the name prompt, then a name.
    tmux.wait_for("the name prompt", SCREEN_TIMEOUT, |s| s.contains("name>"));
    tmux.type_text("ada");
    tmux.key("Enter");
    tmux.wait_for("the main prompt with the name", SCREEN_TIMEOUT, |s| {
        at_main_prompt(s) && s.lines().next().is_some_and(|bar| bar.contains("ada"))
    });

    // A command completed with Tab, then another typed out.
    tmux.type_text("sta");
    tmux.key("Tab");
    tmux.wait_for("Tab completion", SCREEN_TIMEOUT, |s| {
        s.lines().any(|row| row.starts_with("> stats"))
    });
    send_command(&tmux, "stats");
    tmux.type_text("map");
    send_command(&tmux, "map");

    // Mouse capture is off until F2, so text can be selected; F2 again turns it off.
    assert_eq!(
        tmux.pane_var("alternate_on"),
        "1",
        "the UI uses the alternate screen"
    );
    assert_eq!(
        tmux.pane_var("mouse_any_flag"),
        "0",
        "mouse capture off by default"
    );
    tmux.key("F2");
    tmux.wait_for("mouse capture on", SCREEN_TIMEOUT, |s| {
        s.contains("mouse on (F2)")
    });
    assert_eq!(
        tmux.pane_var("mouse_any_flag"),
        "1",
        "F2 turns mouse capture on"
    );
    tmux.key("F2");
    tmux.wait_for("mouse capture off", SCREEN_TIMEOUT, |s| {
        !s.contains("mouse on (F2)")
    });
    assert_eq!(
        tmux.pane_var("mouse_any_flag"),
        "0",
        "F2 again turns it off"
    );

    // Too small, then back to a usable size.
    tmux.resize(30, 8);
    tmux.wait_for("the too-small notice", SCREEN_TIMEOUT, |s| {
        s.contains("too small")
    });
    tmux.resize(80, 24);
    tmux.wait_for("the game again at 80x24", SCREEN_TIMEOUT, |s| {
        at_main_prompt(s) && !s.contains("too small")
    });

    // The help overlay opens and closes.
    tmux.key("F1");
    tmux.wait_for("the help overlay", SCREEN_TIMEOUT, |s| {
        s.contains("Esc closes") && s.contains("mine [n]")
    });
    tmux.key("Escape");
    tmux.wait_for("the help overlay closed", SCREEN_TIMEOUT, |s| {
        !s.contains("Esc closes")
    });

    // F4, then w: the address whole on the terminal's own screen; any key comes back.
    tmux.key("F4");
    tmux.wait_for("the address view", SCREEN_TIMEOUT, |s| {
        s.contains("Addresses friends can --join")
    });
    tmux.type_text("w");
    let outside = tmux.wait_for("the address outside the UI", SCREEN_TIMEOUT, |s| {
        s.contains("any key goes back to the game")
    });
    assert!(outside.contains("/p2p/"), "{outside}");
    assert_eq!(tmux.pane_var("alternate_on"), "0", "on the main screen");
    tmux.type_text("x");
    tmux.wait_for("the game again", SCREEN_TIMEOUT, |s| {
        at_main_prompt(s) && !s.contains("any key goes back")
    });
    assert_eq!(
        tmux.pane_var("alternate_on"),
        "1",
        "back on the UI's screen"
    );

    // quit leaves cleanly, and the terminal is given back.
    tmux.type_text("quit");
    tmux.key("Enter");
    let code = tmux.wait_for_file(&exit_file, SCREEN_TIMEOUT);
    assert_eq!(code.trim(), "0", "cmud exit code");
    tmux.wait_for("the shell after cmud", SCREEN_TIMEOUT, |s| {
        s.contains("CMUD-EXITED")
    });
    assert_eq!(tmux.pane_var("alternate_on"), "0", "alternate screen left");

    let config_dir = config_home.join("cmud");
    let config = std::fs::read_to_string(config_dir.join("config.ron")).expect("config.ron");
    assert!(config.starts_with("// CMUD settings"), "{config}");
    let profile = std::fs::read_to_string(config_dir.join("profile.ron")).expect("profile.ron");
    assert!(profile.contains("\"ada\""), "{profile}");
}

#[test]
fn a_narrow_status_bar_drops_location_before_sync_state() {
    let mut app = playing();
    let mut crowded = status(Mode::Mining);
    crowded.location = "Randy Pausch Bridge".into();
    crowded.clock_warning = true;
    crowded.clock_offset_ms = 120_000;
    crowded.sync = SyncState::Offline;
    app.on_game(Event::Status(crowded));
    let wide = screen_text(&draw(&mut app, 200, 40));
    assert!(
        wide.lines()
            .next()
            .unwrap_or_default()
            .contains("Randy Pausch Bridge")
    );
    let screen = screen_text(&draw(&mut app, 80, 24));
    let bar = screen.lines().next().unwrap_or_default();
    assert!(bar.contains("CLOCK OFF BY 120.0s"), "{bar}");
    assert!(bar.contains("offline"), "{bar}");
    assert!(bar.contains("120 coins"), "{bar}");
    assert!(!bar.contains("Randy"), "{bar}");
}

/// Run by [`a_panic_gives_the_terminal_back`] inside tmux: takes the terminal like the UI does,
/// waits for a key, then panics.
#[test]
#[ignore = "run inside tmux by a_panic_gives_the_terminal_back"]
fn panicking_ui_child() {
    // Only as the child of that test: `cargo test -- --ignored` elsewhere has no terminal.
    if std::env::var_os("CMUD_TUI_PANIC_CHILD").is_none() {
        return;
    }
    let mut screen = cmud::tui::terminal::Screen::enter().expect("a real terminal");
    screen
        .terminal
        .draw(|frame| {
            frame.render_widget(ratatui::widgets::Paragraph::new("IN-THE-UI"), frame.area());
        })
        .expect("draw");
    let _ = crossterm::event::read();
    panic!("deliberate panic: the terminal must come back");
}

#[cfg(unix)]
#[test]
fn a_panic_gives_the_terminal_back() {
    let exe = std::env::current_exe().expect("test binary");
    let script = format!(
        "CMUD_TUI_PANIC_CHILD=1 RUST_BACKTRACE=0 {exe} --ignored --exact panicking_ui_child --nocapture --test-threads=1; \
         if stty -a | grep -q -- '-icanon'; then echo STILL-RAW; else echo COOKED-AGAIN; fi; \
         echo CHILD-EXITED; sleep 60",
        exe = quote(&exe),
    );
    let tmux = tmux::Tmux::start(&script, 100, 30);
    tmux.wait_for("the UI screen", SCREEN_TIMEOUT, |s| s.contains("IN-THE-UI"));
    assert_eq!(
        tmux.pane_var("alternate_on"),
        "1",
        "the UI uses the alternate screen"
    );
    tmux.key("x");
    let screen = tmux.wait_for("the child to end", SCREEN_TIMEOUT, |s| {
        s.contains("CHILD-EXITED")
    });
    assert!(
        screen.contains("the terminal must come back"),
        "the report is readable:\n{screen}"
    );
    assert!(
        screen.contains("COOKED-AGAIN"),
        "raw mode is off:\n{screen}"
    );
    assert!(
        !screen.contains("IN-THE-UI"),
        "back on the main screen:\n{screen}"
    );
    assert_eq!(tmux.pane_var("alternate_on"), "0", "alternate screen left");
}

/// Whether escape sequences set a foreground or background colour (not just reset one).
fn sets_a_colour(screen: &str) -> bool {
    let basic = (0..8).flat_map(|n| {
        [
            format!("\x1b[3{n}m"),
            format!("\x1b[4{n}m"),
            format!("\x1b[9{n}m"),
            format!("\x1b[10{n}m"),
        ]
    });
    ["38;5;", "48;5;", "38;2;", "48;2;"]
        .into_iter()
        .map(str::to_owned)
        .chain(basic)
        .any(|code| screen.contains(&code))
}

#[cfg(unix)]
#[test]
fn no_color_turns_colours_off_and_ctrl_c_leaves() {
    for no_color in [false, true] {
        let home = tempfile::tempdir().expect("temp home");
        let exit_file = home.path().join("exit-code");
        let no_color_env = if no_color {
            "NO_COLOR=1"
        } else {
            "-u NO_COLOR"
        };
        let script = format!(
            "env {no_color_env} HOME={home} XDG_CONFIG_HOME={home}/config \
             XDG_DATA_HOME={home}/data {bin} --name bob \
             --no-mdns --listen /ip4/127.0.0.1/tcp/0 --rpc-port 0; \
             echo $? > {exit}; sleep 60",
            home = quote(home.path()),
            bin = quote(std::path::Path::new(env!("CARGO_BIN_EXE_cmud"))),
            exit = quote(&exit_file),
        );
        let tmux = tmux::Tmux::start(&script, 100, 30);
        tmux.wait_for("the main prompt", SCREEN_TIMEOUT, at_main_prompt);
        tmux.key("F1");
        tmux.wait_for("the help overlay", SCREEN_TIMEOUT, |s| {
            s.contains("Esc closes")
        });
        let screen = tmux.screen_with_escapes();
        assert_eq!(
            sets_a_colour(&screen),
            !no_color,
            "NO_COLOR set: {no_color}; the screen:\n{screen:?}"
        );
        tmux.key("C-c");
        let code = tmux.wait_for_file(&exit_file, SCREEN_TIMEOUT);
        assert_eq!(code.trim(), "0", "Ctrl-C leaves cleanly");
    }
}

#[test]
fn drawing_never_panics_at_small_sizes() {
    let mut battle = battle();
    type_text(
        &mut battle,
        "a long line that does not fit in a narrow terminal at all",
    );
    let mut help = main_screen();
    help.on_key(press(KeyCode::F(1)));
    let mut addresses = main_screen();
    addresses.on_key(press(KeyCode::F(4)));
    let mut chat_view = main_screen();
    chat_view.on_key(press(KeyCode::F(3)));
    for app in [&mut battle, &mut help, &mut addresses, &mut chat_view] {
        for columns in 1..=45 {
            for rows in 1..=14 {
                let screen = screen_text(&draw(app, columns, rows));
                assert_eq!(screen.lines().count(), usize::from(rows));
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn a_taken_rpc_port_moves_and_the_log_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = taken.local_addr().expect("local addr").port();
    let home = tempfile::tempdir().expect("temp home");
    let script = format!(
        "env HOME={home} XDG_CONFIG_HOME={home}/config XDG_DATA_HOME={home}/data {bin} \
         --name bob --no-mdns --listen /ip4/127.0.0.1/tcp/0 --rpc-port {port}; sleep 60",
        home = quote(home.path()),
        bin = quote(std::path::Path::new(env!("CARGO_BIN_EXE_cmud"))),
    );
    let tmux = tmux::Tmux::start(&script, 120, 30);
    let screen = tmux.wait_for("the moved port note", SCREEN_TIMEOUT, |s| {
        s.contains(&format!("rpc port {port} is taken"))
    });
    assert!(at_main_prompt(&screen), "{screen}");
    tmux.key("C-c");
    drop(taken);
}
