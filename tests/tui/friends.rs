//! The screen for friends: chat that stays in view, colours and markers, mentions, timestamps,
//! addresses that are never wrapped and can be copied (OSC 52), Ctrl-C that stops before it
//! quits, the prompt, Ctrl+Home, the side panel, the scrolling help, an idle screen that is not
//! redrawn, and two real players in tmux.

use std::time::{Duration, Instant, UNIX_EPOCH};

use cmud::game::commands::COMMANDS;
use cmud::tui::addr_view::osc52;
use cmud::tui::app::{CTRL_C_AGAIN, View};
use cmud::tui::view::panel_name_and_rank;
use crossterm::event::{KeyCode, KeyModifiers};

use super::*;

const CHAT_LINE: &str = "bob says: ada, want to team up?";

/// Ada in the middle of `mine 1000`, with a screenful of mining output after bob spoke.
fn long_mining_run_with_chat() -> App {
    let mut app = playing();
    enter_line(&mut app, "mine 1000");
    progress(&mut app, Activity::Mining, 37, 1000);
    for i in 1..=20 {
        say(
            &mut app,
            LineKind::Event,
            &format!("--- Mining bitcoin [{i}/1000]... ---"),
        );
        say(&mut app, LineKind::Event, "Successfully mined 2 coins!");
    }
    say(&mut app, LineKind::Chat, CHAT_LINE);
    say(
        &mut app,
        LineKind::Shout,
        "carol shouts: anyone at the Fence?",
    );
    for i in 21..=37 {
        say(
            &mut app,
            LineKind::Event,
            &format!("--- Mining bitcoin [{i}/1000]... ---"),
        );
        say(&mut app, LineKind::Event, "Didn't mine a coin.");
    }
    app
}

#[test]
fn snapshot_chat_stays_in_view_during_a_long_mining_run() {
    for (columns, rows) in [(80, 24), (120, 40), (40, 10)] {
        let mut app = long_mining_run_with_chat();
        let screen = screen_text(&draw(&mut app, columns, rows));
        assert!(screen.contains(CHAT_LINE), "{columns}x{rows}:\n{screen}");
        assert!(screen.contains("[37/1000]"), "{screen}");
        snapshot("mining_with_chat", &mut app, columns, rows);
    }
}

#[test]
fn f3_goes_round_the_views_and_the_status_bar_names_them() {
    let mut app = long_mining_run_with_chat();
    let bar = |app: &mut App| {
        let screen = screen_text(&draw(app, 100, 30));
        screen.lines().next().unwrap_or_default().to_owned()
    };
    assert!(bar(&mut app).contains("view All"));
    app.on_key(press(KeyCode::F(3)));
    assert_eq!(app.view, View::Chat);
    let screen = screen_text(&draw(&mut app, 100, 30));
    assert!(screen.contains(CHAT_LINE) && !screen.contains("Mining bitcoin"));
    app.on_key(press(KeyCode::F(3)));
    assert_eq!(app.view, View::Game);
    say(&mut app, LineKind::Chat, "bob says: hello?");
    let screen = screen_text(&draw(&mut app, 100, 30));
    assert!(!screen.contains("hello?"), "{screen}");
    assert!(bar(&mut app).contains("view Game (1 new chat)"));
    app.on_key(press(KeyCode::F(3)));
    assert_eq!(app.view, View::All);
    assert!(bar(&mut app).contains("view All |"));
}

#[test]
fn each_kind_of_line_has_a_marker_without_colour() {
    let mut app = App::new(Theme::plain());
    app.on_game(Event::Status(status(Mode::Mining)));
    say(&mut app, LineKind::Story, "A story.");
    say(&mut app, LineKind::Event, "Successfully mined 2 coins!");
    say(&mut app, LineKind::News, "--- carol arrives here. ---");
    say(&mut app, LineKind::Error, "You can't afford that.");
    say(&mut app, LineKind::Chat, "bob says: hi");
    say(&mut app, LineKind::Shout, "carol shouts: hello all");
    let screen = screen_text(&draw(&mut app, 100, 30));
    for row in [
        "~ A story.",
        "* Successfully mined 2 coins!",
        "+ --- carol arrives here. ---",
        "! You can't afford that.",
        "' bob says: hi",
        "\" carol shouts: hello all",
    ] {
        assert!(screen.contains(row), "{row} in:\n{screen}");
    }
}

#[test]
fn a_mention_is_highlighted_and_rings_the_bell_unless_turned_off() {
    let mut app = playing();
    assert_eq!(say(&mut app, LineKind::Chat, CHAT_LINE), [Command::Bell]);
    assert!(say(&mut app, LineKind::Chat, "bob says: nice weather").is_empty());
    assert!(say(&mut app, LineKind::Chat, "You say: I am ada").is_empty());
    let terminal = draw(&mut app, 100, 30);
    let screen = screen_text(&terminal);
    let row = screen
        .lines()
        .position(|row| row.contains(CHAT_LINE))
        .expect("the mention is shown");
    assert!(screen.contains(&format!("@ {CHAT_LINE}")), "{screen}");
    let cell = &terminal.backend().buffer()[(2, row as u16)];
    assert!(
        cell.modifier.contains(ratatui::style::Modifier::REVERSED),
        "highlighted"
    );

    app.options.bell_on_mention = false;
    assert!(say(&mut app, LineKind::Shout, "bob shouts: ADA!").is_empty());
}

#[test]
fn timestamps_come_before_lines_when_asked_for() {
    let mut app = playing();
    app.options.timestamps = true;
    app.options.utc_offset_secs = 3600;
    let wall = UNIX_EPOCH + Duration::from_secs(17 * 3600 + 42 * 60);
    app.at(Instant::now(), wall);
    say(&mut app, LineKind::Info, "You mined 6 coins.");
    say(&mut app, LineKind::Chat, "bob says: hi");
    let screen = screen_text(&draw(&mut app, 100, 30));
    assert!(screen.contains("18:42 You mined 6 coins."), "{screen}");
    assert!(screen.contains("18:42 bob says: hi"), "{screen}");
}

#[test]
fn an_address_is_never_wrapped_and_the_addr_view_shows_it_whole() {
    let mut app = main_screen();
    let screen = screen_text(&draw(&mut app, 80, 24));
    let row = screen
        .lines()
        .find(|row| row.starts_with("/ip4/192.168.100.123/"))
        .expect("the address has a row of its own");
    assert!(row.contains('…') && row.contains("MgTs5Jq"), "{row}");
    assert!(!screen.contains("\nMgTs5Jq"), "no second half:\n{screen}");

    let screen = screen_text(&draw(&mut app, 200, 40));
    assert!(
        screen.contains(support::ADDRESS),
        "whole when wide:\n{screen}"
    );

    app.on_key(press(KeyCode::F(4)));
    let screen = screen_text(&draw(&mut app, 100, 30));
    assert!(
        screen.lines().any(|row| row.trim_end() == support::ADDRESS),
        "alone on its row, no border to select with it:\n{screen}"
    );
    assert_eq!(
        app.on_key(press(KeyCode::Char('c'))),
        [Command::Copy(support::ADDRESS.to_owned())]
    );
    assert!(app.addr_view.is_none(), "copying closes the view");

    app.on_key(press(KeyCode::F(4)));
    assert_eq!(
        app.on_key(press(KeyCode::Char('w'))),
        [Command::ShowOutside(support::ADDRESS.to_owned())],
        "w shows it whole outside the full-screen UI"
    );
    assert!(app.outside);
    assert_eq!(app.on_key(press(KeyCode::Char('q'))), [Command::ComeBack]);
    assert!(!app.outside && app.addr_view.is_none());
    assert_eq!(app.input.text(), "say thanks", "the key only comes back");
}

#[test]
fn the_latest_addr_listing_replaces_the_addresses_known() {
    let mut app = main_screen();
    say(
        &mut app,
        LineKind::Info,
        "Friends can join you with `cmud --join <address>`:",
    );
    say(
        &mut app,
        LineKind::Address,
        "/ip4/10.0.0.2/tcp/7441/p2p/12D3KooWA",
    );
    say(
        &mut app,
        LineKind::Address,
        "/ip4/127.0.0.1/tcp/7441/p2p/12D3KooWA",
    );
    assert_eq!(
        app.addresses,
        [
            "/ip4/10.0.0.2/tcp/7441/p2p/12D3KooWA",
            "/ip4/127.0.0.1/tcp/7441/p2p/12D3KooWA"
        ]
    );
    app.on_key(press(KeyCode::F(4)));
    app.on_key(press(KeyCode::Down));
    assert_eq!(
        app.on_key(press(KeyCode::Enter)),
        [Command::Copy(
            "/ip4/127.0.0.1/tcp/7441/p2p/12D3KooWA".into()
        )]
    );
}

/// Plays a game that answers `addr copy` the way the real one does.
async fn addr_copy_game(mut input: mpsc::Receiver<Input>, events: mpsc::Sender<Event>) {
    let _ = events.send(Event::Status(status(Mode::Mining))).await;
    while let Some(line) = input.recv().await {
        match line {
            Input::Line(text) if text == "addr copy" => {
                let _ = events.send(Event::Copy(support::ADDRESS.into())).await;
                let line = Line::new(LineKind::Address, support::ADDRESS);
                let _ = events.send(Event::Line(line)).await;
            }
            Input::Line(text) if text == "quit" => {
                let _ = events.send(Event::Quit).await;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn addr_copy_writes_the_osc52_sequence_to_the_terminal_and_says_so() {
    let (input_tx, input_rx) = mpsc::channel(64);
    let (event_tx, event_rx) = mpsc::channel(256);
    let game = tokio::spawn(addr_copy_game(input_rx, event_tx));
    let (keys_tx, keys_rx) = futures::channel::mpsc::unbounded();
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).expect("test terminal");
    let mut app = App::new(Theme::colored());
    let mut host = RecordingHost::default();
    for line in ["addr copy", "quit"] {
        for code in line.chars().map(KeyCode::Char).chain([KeyCode::Enter]) {
            keys_tx.unbounded_send(key_event(code)).expect("queued");
        }
    }
    let link = GameLink {
        input: input_tx,
        events: event_rx,
    };
    run_until_it_ends(&mut terminal, &mut app, keys_rx, link, &mut host).await;
    let written = String::from_utf8(host.written.clone()).expect("utf-8");
    assert_eq!(written, osc52(support::ADDRESS));
    assert_eq!(
        written,
        "\x1b]52;c;L2lwNC8xOTIuMTY4LjEwMC4xMjMvdGNwLzc0NDEvcDJwLzEyRDNLb29XUm05elNXYlY4a0drMXl1UFV0NHlVYUxybmozdWJmeVJoUTZ3RU1nVHM1SnE=\x07"
    );
    let said: Vec<&str> = app.log.lines().map(|e| e.line.text.as_str()).collect();
    let at = said
        .iter()
        .position(|text| text.starts_with("Copied to the clipboard"))
        .expect("the log says it copied");
    assert_eq!(
        said.get(at + 1),
        Some(&support::ADDRESS),
        "what, on its own line"
    );
    assert_eq!(
        app.addresses,
        [support::ADDRESS],
        "the list is left as it was"
    );
    game.await.expect("game task");
}

#[test]
fn ctrl_c_stops_a_long_action_and_a_second_within_3_s_quits() {
    let ctrl_c = press_with(KeyCode::Char('c'), KeyModifiers::CONTROL);
    let start = Instant::now();
    let mut app = playing();
    progress(&mut app, Activity::Mining, 37, 40);
    app.at(start, std::time::SystemTime::now());
    assert_eq!(app.on_key(ctrl_c), [Command::Send(Input::Interrupt)]);
    assert!(!app.quitting);
    let said = &app.log.lines().last().expect("a line").line.text;
    assert!(said.contains("Ctrl-C again to quit"), "{said}");
    app.at(
        start + CTRL_C_AGAIN - Duration::from_millis(1),
        std::time::SystemTime::now(),
    );
    assert_eq!(app.on_key(ctrl_c), [Command::Quit]);
    assert!(app.quitting);

    // Too late for a second: it stops again (something still runs) rather than quitting.
    let mut app = playing();
    progress(&mut app, Activity::Solving, 1, 9);
    app.at(start, std::time::SystemTime::now());
    app.on_key(ctrl_c);
    app.at(
        start + CTRL_C_AGAIN + Duration::from_secs(1),
        std::time::SystemTime::now(),
    );
    assert_eq!(app.on_key(ctrl_c), [Command::Send(Input::Interrupt)]);

    // Nothing running, or only story text: at once.
    let mut app = playing();
    assert_eq!(app.on_key(ctrl_c), [Command::Quit]);
    let mut app = playing();
    progress(&mut app, Activity::Story, 1, 4);
    assert_eq!(app.on_key(ctrl_c), [Command::Quit]);
}

#[test]
fn the_prompt_says_mining_or_solving_only_while_it_runs() {
    let mut app = playing();
    assert_eq!(app.prompt(), "> ");
    progress(&mut app, Activity::Mining, 1, 5);
    assert_eq!(app.prompt(), "(mining) > ");
    app.on_game(Event::Progress(None));
    assert_eq!(app.prompt(), "> ");
    app.on_game(Event::Status(status(Mode::Solving)));
    assert_eq!(app.prompt(), "(battle) > ");
    progress(&mut app, Activity::Solving, 1, 5);
    assert_eq!(app.prompt(), "(solving) > ");
    let mut naming = App::new(Theme::colored());
    assert_eq!(naming.prompt(), "name> ");
    progress(&mut naming, Activity::Story, 1, 5);
    assert_eq!(naming.prompt(), "name> ");
}

#[test]
fn ctrl_home_shows_the_oldest_lines_at_the_top() {
    let mut app = playing();
    app.resize(80, 24);
    for i in 0..100 {
        say(&mut app, LineKind::Info, &format!("output {i}"));
    }
    app.on_key(press_with(KeyCode::Home, KeyModifiers::CONTROL));
    let screen = screen_text(&draw(&mut app, 80, 24));
    let rows: Vec<&str> = screen.lines().collect();
    assert!(rows[1].starts_with("output 0 "), "{screen}");
    assert!(screen.contains("newer lines below"), "{screen}");
    app.on_key(press_with(KeyCode::End, KeyModifiers::CONTROL));
    assert!(app.log.is_following());
}

#[test]
fn side_panel_names_are_shortened_with_an_ellipsis() {
    assert_eq!(
        panel_name_and_rank("alice#ZHD", "Undergraduate", 20),
        ("alice#ZHD".to_owned(), " Undergrad…".to_owned())
    );
    assert_eq!(
        panel_name_and_rank("bob", "PhD", 20),
        ("bob".to_owned(), " PhD".to_owned())
    );
    assert_eq!(
        panel_name_and_rank("a_very_long_name_of_24ch", "PhD", 20),
        ("a_very_long_name_of…".to_owned(), String::new())
    );
    let mut app = playing();
    let mut crowded = status(Mode::Mining);
    crowded.players[1].name = "alice#ZHD".into();
    crowded.players[1].rank = "Undergraduate".into();
    app.on_game(Event::Status(crowded));
    let screen = screen_text(&draw(&mut app, 80, 24));
    assert!(screen.contains("* alice#ZHD Undergrad…"), "{screen}");
}

#[test]
fn the_help_overlay_lists_the_game_table_and_scrolls_at_the_smallest_size() {
    let mut app = playing();
    app.on_key(press(KeyCode::F(1)));
    let mut seen = String::new();
    for _ in 0..40 {
        seen.push_str(&screen_text(&draw(&mut app, 40, 10)));
        app.on_key(press(KeyCode::PageDown));
    }
    for command in COMMANDS {
        assert!(seen.contains(command.name), "{} never shown", command.name);
    }
    assert!(seen.contains("Ctrl-C"), "the keys are reached");
    app.on_key(press(KeyCode::PageUp));
    assert!(app.help_open(), "PgUp scrolls, it does not close");
}

#[tokio::test]
async fn an_idle_screen_is_not_redrawn_and_the_loop_sleeps() {
    let (input_tx, _input_rx) = mpsc::channel(4);
    let (event_tx, event_rx) = mpsc::channel(4);
    let (_keys_tx, keys_rx) = futures::channel::mpsc::unbounded::<io::Result<TermEvent>>();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test terminal");
    let mut app = playing();
    let mut host = RecordingHost::default();
    let link = GameLink {
        input: input_tx,
        events: event_rx,
    };
    let game = async move {
        let line = Line::new(LineKind::Info, "something happened");
        event_tx
            .send(Event::Line(line))
            .await
            .expect("loop running");
        // Idle for many tick periods (a spinner would have turned ten times), then goodbye.
        tokio::time::sleep(runner::TICK_PERIOD * 10).await;
        event_tx.send(Event::Quit).await.expect("loop running");
    };
    let run = run_until_it_ends(&mut terminal, &mut app, keys_rx, link, &mut host);
    tokio::join!(run, game);
    assert_eq!(app.frames, 2, "the first frame and the one for the line");
    assert_eq!(app.ticks, 0, "no clock wakes an idle loop");
}

/// The shell line that runs the real binary as `name` in its own home, then keeps the pane.
#[cfg(unix)]
fn player_script(home: &std::path::Path, name: &str, join: Option<&str>) -> String {
    let join = join.map_or(String::new(), |addr| format!(" --join {addr}"));
    format!(
        "env -u NO_COLOR HOME={home} XDG_CONFIG_HOME={home}/config XDG_DATA_HOME={home}/data \
         {bin} --name {name} --no-mdns --listen /ip4/127.0.0.1/tcp/0 --rpc-port 0{join}; \
         echo $? > {home}/exit-code; sleep 60",
        home = quote(home),
        bin = quote(std::path::Path::new(env!("CARGO_BIN_EXE_cmud"))),
    )
}

/// The `done` of the `Mining done/total` gauge on a screen.
fn mining_done(screen: &str) -> Option<u64> {
    let row = screen.lines().find(|row| row.starts_with("Mining "))?;
    let count = row.split_whitespace().nth(1)?;
    count.split('/').next()?.parse().ok()
}

/// Long enough for ten mining attempts of up to 4 s each, on a loaded machine.
const MINING_TIMEOUT: Duration = Duration::from_secs(120);

#[cfg(unix)]
#[test]
fn chat_said_during_mine_200_stays_on_the_miners_screen() {
    let alice_home = tempfile::tempdir().expect("temp home");
    let bob_home = tempfile::tempdir().expect("temp home");
    let alice = tmux::Tmux::start(&player_script(alice_home.path(), "alice", None), 130, 30);
    alice.wait_for("alice's prompt", SCREEN_TIMEOUT, at_main_prompt);
    alice.type_text("addr");
    alice.key("Enter");
    let screen = alice.wait_for("alice's address", SCREEN_TIMEOUT, |s| {
        s.contains("/ip4/127.0.0.1/tcp/") && s.contains("/p2p/")
    });
    let addr = screen
        .lines()
        .filter_map(|row| row.split_whitespace().next())
        .find(|word| word.starts_with("/ip4/127.0.0.1/tcp/") && !word.contains('…'))
        .expect("a whole address on a row of its own")
        .to_owned();

    // `addr copy` sends the address with OSC 52; tmux takes it as a paste buffer when told to.
    alice.command(&["set-option", "-g", "set-clipboard", "on"]);
    alice.type_text("addr copy");
    alice.key("Enter");
    alice.wait_for("the copy reported", SCREEN_TIMEOUT, |s| {
        s.contains("Copied to the clipboard")
    });
    assert_eq!(
        alice.command(&["show-buffer"]),
        addr,
        "the clipboard holds the address"
    );

    let bob = tmux::Tmux::start(&player_script(bob_home.path(), "bob", Some(&addr)), 100, 30);
    bob.wait_for("bob's prompt", SCREEN_TIMEOUT, at_main_prompt);
    alice.wait_for("bob in alice's world", SCREEN_TIMEOUT, |s| {
        s.contains("* bob")
    });

    alice.type_text("mine 200");
    alice.key("Enter");
    alice.wait_for("alice mining", SCREEN_TIMEOUT, |s| {
        s.contains("(mining) >") && mining_done(s).is_some()
    });
    bob.type_text("say alice, want to team up?");
    bob.key("Enter");
    let line = "bob says: alice, want to team up?";
    let screen = alice.wait_for("bob's line on alice's screen", SCREEN_TIMEOUT, |s| {
        s.contains(line)
    });
    let heard_at = mining_done(&screen).unwrap_or(0);
    // Ten more attempts print a screenful of mining output; the chat line stays.
    let screen = alice.wait_for("ten more mining attempts", MINING_TIMEOUT, |s| {
        mining_done(s).is_some_and(|done| done >= heard_at + 10)
    });
    assert!(screen.contains(line), "pushed off by mining:\n{screen}");

    // Ctrl-C stops the mining and warns; a second one quits.
    alice.key("C-c");
    alice.wait_for("the Ctrl-C warning", SCREEN_TIMEOUT, |s| {
        s.contains("Ctrl-C again to quit")
    });
    alice.key("C-c");
    let code = alice.wait_for_file(&alice_home.path().join("exit-code"), SCREEN_TIMEOUT);
    assert_eq!(code.trim(), "0", "alice's cmud exit code");
    bob.key("C-c");
    let code = bob.wait_for_file(&bob_home.path().join("exit-code"), SCREEN_TIMEOUT);
    assert_eq!(code.trim(), "0", "bob's cmud exit code");
}

/// User plus system CPU time of a process so far, in clock ticks (`/proc/<pid>/stat`).
#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process runs");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    field(11) + field(12)
}

/// The `cmud` process whose parent is `parent` (the tmux pane's shell).
#[cfg(target_os = "linux")]
fn cmud_child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (name, rest) = stat.split_once(") ")?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent && name.ends_with("(cmud")).then_some(pid)
        })
}

/// Measures the idle CPU of the real binary: `cargo test --release --test tui idle_cpu --
/// --ignored --nocapture` (the README has the last figures).
#[cfg(target_os = "linux")]
#[test]
#[ignore = "a one-minute measurement; run it by name"]
fn idle_cpu_of_the_real_binary() {
    const IDLE: Duration = Duration::from_secs(60);
    const TICKS_PER_SECOND: f64 = 100.0;
    let home = tempfile::tempdir().expect("temp home");
    let tmux = tmux::Tmux::start(&player_script(home.path(), "idle", None), 100, 30);
    tmux.wait_for("the prompt", SCREEN_TIMEOUT, at_main_prompt);
    // Let the start-up (story text, first sync attempts) settle.
    std::thread::sleep(Duration::from_secs(15));
    let shell: u32 = tmux.pane_var("pane_pid").parse().expect("pane pid");
    let pid = cmud_child_of(shell).expect("cmud under the pane's shell");
    let before = cpu_ticks(pid);
    std::thread::sleep(IDLE);
    let used = (cpu_ticks(pid) - before) as f64 / TICKS_PER_SECOND;
    let percent = 100.0 * used / IDLE.as_secs_f64();
    println!(
        "idle cmud (node, game and TUI): {used:.2} s of CPU in 60 s = {percent:.2} % of a core"
    );
    assert!(percent < 1.0, "{percent:.2} % of a core while idle");
    tmux.key("C-c");
}
