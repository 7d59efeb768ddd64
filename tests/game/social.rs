//! Playing together: the command table driving help and dispatch, places and notes, and two
//! players on two real nodes (each with its own identity) who share a problem, tell each
//! other things privately and see each other leave.

use std::sync::Arc;
use std::time::Duration;

use cmud::game::commands::{self, CommandId};
use cmud::game::events::{LineKind, Mode};
use cmud::game::tell::TellKey;
use cmud::rpc::Kv;

use super::harness::{DEADLINE, NetNode, Player, ShiftedClock, TestNode, content_with, options};

#[tokio::test]
async fn every_command_of_the_table_has_help_and_a_handler() {
    let node = TestNode::start().await;
    let (mut p, _) = Player::start(node.kv.clone(), options(Some("tab"), None, 3)).await;
    for c in commands::COMMANDS {
        let help = p.run(&format!("help {}", c.name)).await;
        assert_eq!(help, [format!("{} - {}", c.synopsis(), c.help)]);
    }
    let skip = [CommandId::Quit, CommandId::Solve];
    for c in commands::available(Mode::Mining).filter(|c| !skip.contains(&c.id)) {
        let out = p.run(c.name).await;
        assert!(
            !out.iter()
                .any(|l| l.starts_with("Unknown command") || l.contains("could be")),
            "{}: {out:?}",
            c.name
        );
    }
    p.run("solve").await;
    for c in commands::available(Mode::Solving).filter(|c| !skip.contains(&c.id)) {
        let out = p.run(c.name).await;
        assert!(
            !out.iter().any(|l| l.starts_with("Unknown command")),
            "{}: {out:?}",
            c.name
        );
    }
    assert_eq!(p.status.mode, Mode::Mining, "`resign` left the battle");
}

#[tokio::test]
async fn look_notes_emotes_and_short_forms() {
    let node = TestNode::start().await;
    let (mut p, _) = Player::start(node.kv.clone(), options(Some("pat"), None, 4)).await;
    let content = cmud::game::content::Content::embedded();
    let five = content.location("5").unwrap();
    let exits = "You can go to: fence, bridge, 1, 2, 3, 4, 6, 7, 8, 9.";
    assert_eq!(
        p.run("look").await,
        [
            "--- Gates 5th Floor (5) ---",
            five.description.as_str(),
            "Nobody else is here.",
            exits
        ]
    );
    assert_eq!(p.run("'hello there").await, ["You say: hello there"]);
    assert_eq!(p.run(":waves").await, ["pat waves"]);
    assert_eq!(p.run("emote bows").await, ["pat bows"]);
    assert_eq!(
        p.run("note meet at the fence").await,
        ["You leave a note here: meet at the fence"]
    );
    let look = p.run("l").await;
    assert_eq!(
        look[3..],
        ["Notes left here:", "  pat: meet at the fence", exits]
    );
    for i in 2..=5 {
        p.run(&format!("note number {i}")).await;
    }
    assert_eq!(
        p.run("note number 6").await,
        [
            "You leave a note here: number 6",
            "You may leave 5 notes in all, so your oldest (meet at the fence at Gates 5th Floor) was taken down."
        ]
    );
    let look = p.run("look").await;
    assert!(
        !look.iter().any(|l| l.contains("meet at the fence")),
        "{look:?}"
    );
    assert_eq!(p.run("unnote").await, ["You take down your 5 notes."]);
    assert_eq!(p.run("unnote").await, ["You have no note here."]);
    for (input, error) in [
        (
            "note",
            "Note what? Type `note <text>`; `look` shows the notes here.",
        ),
        ("'", "Say what? Type `say <text>`."),
        (
            "tell",
            "Usage: tell <player> <text>, for example `tell bob meet me at the fence`.",
        ),
        ("tell nobody hi", "There is no player called \"nobody\"."),
        ("tell pat hi", "Talking to yourself needs no encryption."),
        (
            "m",
            "\"m\" could be map, move, mine or mail. Type more of it.",
        ),
    ] {
        let out = p.run_raw(input).await;
        assert_eq!(out, [(LineKind::Error, error.to_owned())], "{input}");
    }
    assert_eq!(
        p.run("mail").await,
        ["This cmud has no tell key, so it cannot read tells."]
    );
}

/// Waits until `kv`'s replica has a key under `prefix` for which `check` holds.
async fn wait_for_key(kv: &impl Kv, prefix: &str, check: impl Fn(&str, &str) -> bool) -> String {
    let start = tokio::time::Instant::now();
    loop {
        let pairs = kv.list(prefix).await.unwrap();
        if let Some((_, v)) = pairs.iter().find(|(k, v)| check(k, v)) {
            return v.clone();
        }
        assert!(start.elapsed() < DEADLINE, "never saw {prefix}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn friends_on_two_nodes_share_a_problem_tell_privately_and_see_each_other_leave() {
    let [a, b] = NetNode::pair().await;
    let content = content_with(&[
        ("problem: Some(100)", "problem: Some(10)"),
        ("progress_percent: 80", "progress_percent: 100"),
        ("break_percent: 15", "break_percent: 0"),
    ]);
    let alice_clock = Arc::new(ShiftedClock::default());
    let mut opts = options(Some("alice"), None, 1);
    opts.content = Some(content.clone());
    opts.tell_key = Some(a.tell_key());
    opts.clock = Some(alice_clock.clone());
    let (mut alice, _) = Player::start(a.kv.clone(), opts).await;
    let bob_options = || {
        let mut opts = options(None, None, 2);
        opts.content = Some(content.clone());
        opts.tell_key = Some(b.tell_key());
        opts.clock = Some(Arc::new(ShiftedClock::default()));
        opts
    };
    let alice_id = a.node.peer_id().to_owned();
    let bob_id = b.node.peer_id().to_owned();
    wait_for_key(&b.kv, &format!("p/{alice_id}/"), |k, v| {
        k.ends_with("/name") && v == "alice"
    })
    .await;

    // bob first picks a name alice has: he is warned, and chooses another.
    let (mut bob, _) = Player::start(b.kv.clone(), bob_options()).await;
    let warned = bob.run("Alice").await;
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].starts_with("Another player is already called Alice. Type Alice again to keep it (you will be shown as Alice#"),
        "{warned:?}"
    );
    assert_eq!(bob.status.mode, Mode::Naming);
    bob.run("bob").await;
    assert_eq!(bob.chosen, ["bob"]);
    alice
        .wait_for_line(|l| l == "--- bob has joined the world. ---")
        .await;

    // They share the Undergraduate problem: alice does 6 of 10 steps, bob the last 4.
    alice.run("solve").await;
    let out = alice.run("solve 6").await;
    assert_eq!(out.last().unwrap(), "The problem has 4 remaining steps.");
    bob.run_until("stats", |out| {
        out.contains(&"Problem: 4 of 10 steps remaining".to_owned())
    })
    .await;
    bob.run("solve").await;
    let out = bob.run("solve 10").await;
    assert!(
        out.contains(&"--- Promoted to Masters! ---".to_owned()),
        "{out:?}"
    );
    let fell =
        "--- The Undergraduate problem falls to alice (60%) and bob (40%): both are promoted. ---";
    alice.wait_for_line(|l| l == fell).await;
    alice
        .wait_for_line(|l| l == "--- Promoted to Masters! ---")
        .await;
    bob.wait_for_line(|l| l == fell).await;
    alice
        .run_until("stats", |out| out.contains(&"Rank: Masters".to_owned()))
        .await;
    // The next Undergraduate problem is larger: 10 grown by half.
    let world = cmud::game::schema::World::from_pairs(a.kv.list("p/").await.unwrap());
    let problem = cmud::game::ledger::problem(&content, &world, 0).unwrap();
    assert_eq!((problem.epoch, problem.size), (2, 15));

    // bob quits; alice sees him leave, and tells him something while he is away.
    bob.quit().await;
    alice
        .wait_for_line(|l| l == "--- bob has left the world. ---")
        .await;
    assert_eq!(
        alice.run("tell bob the key is under the mat").await,
        ["You tell bob: the key is under the mat (bob is away and will read it on coming back.)"]
    );
    let tell_prefix = format!("p/{alice_id}/tell/{bob_id}/");
    let stored = wait_for_key(&b.kv, &tell_prefix, |_, _| true).await;
    assert!(
        !stored.contains("mat") && !stored.contains(&alice_id),
        "{stored}"
    );
    assert!(
        TellKey::generate().open(&alice_id, &stored).is_none(),
        "another node's key cannot open it"
    );
    assert!(
        a.tell_key().open(&alice_id, &stored).is_none(),
        "nor the sender's"
    );

    // bob comes back: the tell waits for him, `mail` reads it, and alice's node deletes it.
    let (mut bob, _) = Player::start(b.kv.clone(), bob_options()).await;
    bob.wait_for_line(|l| l == "1 tell came while you were away: type `mail` to read them.")
        .await;
    assert_eq!(
        bob.run("mail").await,
        [
            "Tells while you were away (1):",
            "alice tells you: the key is under the mat"
        ]
    );
    assert_eq!(bob.run("mail").await, ["No tells are waiting."]);
    let start = tokio::time::Instant::now();
    while !a.kv.list(&tell_prefix).await.unwrap().is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "the read tell was never removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A tell to someone online arrives at once.
    bob.run("tell alice thanks").await;
    alice.wait_for_line(|l| l == "bob tells you: thanks").await;

    // Forty seconds later by alice's clock, bob's heartbeat has lapsed: he has gone quiet.
    alice_clock.advance(Duration::from_secs(40));
    alice
        .wait_for_line(|l| l == "--- bob has gone quiet. ---")
        .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_json_session_is_one_object_per_event_line() {
    let dir = tempfile::tempdir().unwrap();
    let script = "jo\nsay hi there\n'quoted \"text\" \\ too\n:waves\nmine 2\nstats\nfrobnicate\nm\nlook\ntop\nhelp\n";
    let (code, stdout, stderr) = super::plain(dir.path(), &["--json"], script).await;
    assert_eq!(code, 0, "stderr: {stderr}");
    let mut types = std::collections::BTreeSet::new();
    let mut chats = Vec::new();
    for line in stdout.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
        let kind = value["type"]
            .as_str()
            .unwrap_or_else(|| panic!("no type: {line}"));
        types.insert(kind.to_owned());
        if kind == "chat" {
            chats.push((
                value["scope"].as_str().unwrap().to_owned(),
                value["from"].as_str().unwrap().to_owned(),
                value["text"].as_str().unwrap().to_owned(),
            ));
        }
        if kind == "mined" {
            assert_eq!(value["attempts"], 2, "{line}");
            assert!(value["coins"].is_u64(), "{line}");
        }
    }
    for wanted in [
        "story",
        "info",
        "error",
        "echo",
        "chat",
        "mined",
        "status",
        "progress",
        "progress_end",
        "name_chosen",
        "quit",
    ] {
        assert!(types.contains(wanted), "no {wanted} event in {types:?}");
    }
    assert_eq!(
        chats,
        [
            ("say".into(), "jo".into(), "hi there".into()),
            ("say".into(), "jo".into(), "quoted \"text\" \\ too".into()),
            ("emote".into(), "jo".into(), "waves".into()),
        ]
    );
    assert_eq!(stdout.lines().last(), Some(r#"{"type":"quit"}"#));
}
