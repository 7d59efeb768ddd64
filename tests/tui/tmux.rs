//! A real terminal for the end-to-end test: a private tmux server, killed on every path.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A tmux server on a socket of its own, with one session; killed on drop.
pub struct Tmux {
    /// The `-L` socket name, unique to this test run.
    socket: String,
}

/// Name of the one session.
const SESSION: &str = "cmud";

impl Tmux {
    /// Starts a detached session of `columns` x `rows` running `sh -c script`.
    pub fn start(script: &str, columns: u16, rows: u16) -> Tmux {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let nth = STARTED.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmux = Tmux {
            socket: format!("cmud-tui-test-{}-{nth}-{nanos}", std::process::id()),
        };
        let columns = columns.to_string();
        let rows = rows.to_string();
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            &columns,
            "-y",
            &rows,
            "sh",
            "-c",
            script,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null")
            .args(args)
            .output()
            .expect("tmux is required for this test (.ci/run installs it)")
    }

    /// Runs a tmux command against this server (`set-option`, `show-buffer`); its stdout.
    pub fn command(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) {
        let out = self.run(&["send-keys", "-t", SESSION, "-l", text]);
        assert!(out.status.success(), "send-keys failed");
    }

    /// Presses a named key (`Enter`, `Escape`, `F1`, `Tab`).
    pub fn key(&self, key: &str) {
        let out = self.run(&["send-keys", "-t", SESSION, key]);
        assert!(out.status.success(), "send-keys {key} failed");
    }

    /// Resizes the window (and so the pane) to `columns` x `rows`.
    pub fn resize(&self, columns: u16, rows: u16) {
        let (columns, rows) = (columns.to_string(), rows.to_string());
        let out = self.run(&["resize-window", "-t", SESSION, "-x", &columns, "-y", &rows]);
        assert!(
            out.status.success(),
            "resize-window failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The screen now.
    pub fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", SESSION]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen now, with its colours and emphasis as escape sequences.
    pub fn screen_with_escapes(&self) -> String {
        let out = self.run(&["capture-pane", "-e", "-p", "-t", SESSION]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tmux format variable of the pane (`alternate_on`, `pane_dead`).
    pub fn pane_var(&self, name: &str) -> String {
        let format = format!("#{{{name}}}");
        let out = self.run(&["display-message", "-p", "-t", SESSION, &format]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits (up to `timeout`) until the screen satisfies `check`; panics with the screen
    /// otherwise.
    pub fn wait_for(&self, what: &str, timeout: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen shows:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (up to `timeout`) until `path` exists and has content.
    pub fn wait_for_file(&self, path: &Path, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && !text.trim().is_empty()
            {
                return text;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {}; the screen shows:\n{}",
                    path.display(),
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let socket = self.pane_var("socket_path");
        let _ = self.run(&["kill-server"]);
        // tmux leaves the socket file behind; it is ours, so it goes too.
        if socket.contains(&self.socket) {
            let _ = std::fs::remove_file(socket);
        }
    }
}
