//! Private tells as the player sees them: `tell <player> <text>` seals a line to the
//! recipient's published key (`tell`), `mail` reads the tells that came while the player was
//! away, and tells that arrive while the player is online are shown at once.
//!
//! A tell is stored under its sender's namespace (`p/<sender>/tell/<recipient>/<seq>`); the
//! recipient records what they read (`p/<recipient>/read/<sender>`), and the sender's game
//! deletes what was read. Every step writes only the writer's own keys.

use super::commands;
use super::ctx::Ctx;
use super::events::{Chat, ChatScope, Detail, Line, LineKind};
use super::names;
use super::news;
use super::player::{Change, Outcome};
use super::schema::World;
use super::session::Session;
use super::tell;
use crate::rpc::{Kv, KvError};

/// A tell to this player that they have not read yet.
pub(super) struct Unread {
    /// Sender id.
    pub from: String,
    /// Its seq.
    pub seq: u64,
    /// The sender's shown name.
    pub name: String,
    /// What it says.
    pub text: String,
}

/// The tells to `ctx`'s player in `world` that they have not read, oldest first per sender.
/// Tells this node cannot open (another key, tampered, a sender's mischief) are left out.
pub(super) fn unread<K: Kv>(ctx: &Ctx<K>, world: &World) -> Vec<Unread> {
    let Some(key) = &ctx.tell else {
        return Vec::new();
    };
    let me = world.player(&ctx.id);
    let shown = names::display_names(world);
    let mut out = Vec::new();
    for p in world.characters().filter(|p| p.id != ctx.id) {
        let read = me.read.get(&p.id).copied().unwrap_or(0);
        for ((to, seq), sealed) in &p.tells {
            if *to != ctx.id || *seq <= read {
                continue;
            }
            if let Some(opened) = key.open(&p.id, sealed) {
                out.push(Unread {
                    from: p.id.clone(),
                    seq: *seq,
                    name: shown.get(&p.id).cloned().unwrap_or_default(),
                    text: super::schema::shown_text(&opened.text, MAX_TELL_CHARS),
                });
            }
        }
    }
    out.sort_by_key(|u| (u.from.clone(), u.seq));
    out
}

/// Longest tell shown, in characters (a peer may seal anything).
const MAX_TELL_CHARS: usize = 1000;

/// The line a tell is shown as.
pub(super) fn tell_line(unread: &Unread, scope: ChatScope) -> Line {
    let detail = Detail::Chat(Chat {
        scope,
        from: unread.name.clone(),
        text: unread.text.clone(),
    });
    let text = format!("{} tells you: {}", unread.name, unread.text);
    Line::about(LineKind::Chat, text, detail)
}

/// Records that the player read `tells` (the highest seq per sender).
pub(super) async fn mark_read<K: Kv>(ctx: &Ctx<K>, tells: &[Unread]) -> Result<(), KvError> {
    let mut highest: std::collections::BTreeMap<&str, u64> = Default::default();
    for t in tells {
        let seq = highest.entry(t.from.as_str()).or_default();
        *seq = (*seq).max(t.seq);
    }
    for (from, seq) in highest {
        let change = Change::Read {
            from: from.to_owned(),
            seq,
        };
        ctx.player.apply(change).await?;
    }
    Ok(())
}

/// Whether the player has sent tells that their recipients have read (so can be deleted).
pub(super) fn read_by_recipients(world: &World, me: &str) -> bool {
    world
        .player(me)
        .tells
        .keys()
        .any(|(to, seq)| world.player(to).read.get(me).copied().unwrap_or(0) >= *seq)
}

impl<K: Kv> Session<K> {
    /// `tell <player> <text>`.
    pub(super) async fn tell_player(&mut self, rest: &str) -> Result<(), KvError> {
        let (who, text) = commands::split(rest);
        let text = commands::clean_text(text);
        if who.is_empty() || text.is_empty() {
            let usage = "Usage: tell <player> <text>, for example `tell bob meet me at the fence`.";
            return self.ctx.reply(LineKind::Error, usage).await;
        }
        let max = self.ctx.content.rules.chat.max_chars;
        if text.chars().count() > max {
            let why = format!("That is too long to tell: at most {max} characters.");
            return self.ctx.reply(LineKind::Error, why).await;
        }
        let world = self.world().await?;
        let to = match names::find(&world, who).one(who) {
            Ok(id) if id == self.ctx.id => {
                let why = "Talking to yourself needs no encryption.";
                return self.ctx.reply(LineKind::Error, why).await;
            }
            Ok(id) => id,
            Err(why) => return self.ctx.reply(LineKind::Error, why).await,
        };
        let recipient = world.player(&to);
        let shown = names::display_names(&world).remove(&to).unwrap_or_default();
        let sealed = recipient
            .tell_key
            .as_deref()
            .map(|key| tell::seal(key, &self.ctx.id, self.ctx.clock.now_ms(), &text));
        let sealed = match sealed {
            Some(Ok(sealed)) => sealed,
            Some(Err(_)) | None => {
                let why = format!(
                    "{shown} cannot receive tells: their cmud has published no key for them."
                );
                return self.ctx.reply(LineKind::Error, why).await;
            }
        };
        match self.ctx.player.apply(Change::Tell { to, sealed }).await? {
            Outcome::Done => {}
            _ => {
                let why = format!("{shown} cannot receive tells.");
                return self.ctx.reply(LineKind::Error, why).await;
            }
        }
        let away = !news::online(&self.ctx.content, &recipient, self.ctx.clock.now_ms());
        let mut said = format!("You tell {shown}: {text}");
        if away {
            said.push_str(&format!(
                " ({shown} is away and will read it on coming back.)"
            ));
        }
        let detail = Detail::Chat(Chat {
            scope: ChatScope::Tell,
            from: names::display_names(&world)
                .remove(&self.ctx.id)
                .unwrap_or_default(),
            text,
        });
        self.ctx
            .send(super::events::Event::Line(Line::about(
                LineKind::Chat,
                said,
                detail,
            )))
            .await;
        Ok(())
    }

    /// `mail`: the tells that waited while the player was away.
    pub(super) async fn mail(&mut self) -> Result<(), KvError> {
        if self.ctx.tell.is_none() {
            let why = "This cmud has no tell key, so it cannot read tells.";
            return self.ctx.reply(LineKind::Error, why).await;
        }
        let world = self.world().await?;
        let waiting = unread(&self.ctx, &world);
        if waiting.is_empty() {
            return self
                .ctx
                .reply(LineKind::Info, "No tells are waiting.")
                .await;
        }
        self.ctx
            .line(
                LineKind::Info,
                format!("Tells while you were away ({}):", waiting.len()),
            )
            .await;
        for t in &waiting {
            self.ctx
                .send(super::events::Event::Line(tell_line(t, ChatScope::Mail)))
                .await;
        }
        mark_read(&self.ctx, &waiting).await
    }
}
