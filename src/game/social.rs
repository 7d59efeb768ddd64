//! The multiplayer and node commands: `map`, `who`, `say`, `shout`, `top`, `give`, and the
//! node side, `addr` and `join`.

use std::time::Duration;

use tokio::sync::oneshot;

use super::commands;
use super::ctx::Ctx;
use super::events::{Event, LineKind};
use super::names::{self, Found};
use super::news;
use super::player::{Change, Outcome};
use super::schema::Scope;
use super::session::Session;
use crate::rpc::{Kv, KvError};

impl<K: Kv> Session<K> {
    /// `map`: every character by location, in map order; offline players are marked.
    pub(super) async fn map(&mut self) -> Result<(), KvError> {
        let world = self.world().await?;
        let content = self.ctx.content.clone();
        let now = self.ctx.clock.now_ms();
        let shown = names::display_names(&world);
        let mut lines = Vec::new();
        for loc in &content.rules.locations {
            let mut here: Vec<String> = world
                .characters()
                .filter(|p| p.loc.as_deref() == Some(loc.id.as_str()))
                .map(|p| {
                    let name = shown.get(&p.id).cloned().unwrap_or_default();
                    if p.id == self.ctx.id || news::online(&content, p, now) {
                        name
                    } else {
                        format!("{name} (offline)")
                    }
                })
                .collect();
            if here.is_empty() {
                continue;
            }
            here.sort_by_key(|name| name.to_lowercase());
            lines.push(format!("--- {} ({}) ---", loc.name, loc.id));
            lines.push(here.join(", "));
        }
        for text in lines {
            self.ctx.line(LineKind::Info, text).await;
        }
        Ok(())
    }

    /// `who`: the players online now.
    pub(super) async fn who(&mut self) -> Result<(), KvError> {
        let world = self.world().await?;
        let online: Vec<_> = news::presence(
            &self.ctx.content,
            &world,
            self.ctx.clock.now_ms(),
            &self.ctx.id,
        )
        .into_iter()
        .filter(|p| p.online)
        .collect();
        let title = format!("Online now ({}):", online.len());
        self.ctx.line(LineKind::Info, title).await;
        for p in online {
            let text = format!("  {} - {}, {}", p.name, p.rank, p.location);
            self.ctx.line(LineKind::Info, text).await;
        }
        Ok(())
    }

    /// `say` and `shout`.
    pub(super) async fn chat(&mut self, text: &str, shout: bool) -> Result<(), KvError> {
        let verb = if shout { "shout" } else { "say" };
        let text = commands::clean_text(text);
        let max = self.ctx.content.rules.chat.max_chars;
        if text.is_empty() {
            let why = format!(
                "{} what? Type `{verb} <text>`.",
                super::actions::capitalise(verb)
            );
            return self.ctx.reply(LineKind::Error, why).await;
        }
        if text.chars().count() > max {
            let why = format!("That is too long to {verb}: at most {max} characters.");
            return self.ctx.reply(LineKind::Error, why).await;
        }
        let scope = if shout {
            Scope::Shout
        } else {
            let world = self.world().await?;
            Scope::Say(world.player(&self.ctx.id).loc.unwrap_or_default())
        };
        self.ctx
            .player
            .apply(Change::Chat {
                scope,
                text: text.clone(),
            })
            .await?;
        self.ctx
            .line(LineKind::Chat, format!("You {verb}: {text}"))
            .await;
        Ok(())
    }

    /// `top`.
    pub(super) async fn top(&mut self) -> Result<(), KvError> {
        let world = self.world().await?;
        let content = self.ctx.content.clone();
        let rows = news::leaderboard(&content, &world);
        self.ctx.line(LineKind::Info, "Leaderboard:").await;
        for (i, (name, rank, coins)) in rows.into_iter().take(content.rules.top_size).enumerate() {
            let text = format!(
                "  {}. {name} - {rank}, {coins} {}",
                i + 1,
                content.rules.currency
            );
            self.ctx.line(LineKind::Info, text).await;
        }
        Ok(())
    }

    /// `give <player> <coins>`.
    pub(super) async fn give(&mut self, rest: &str) -> Result<(), KvError> {
        let args: Vec<&str> = rest.split_whitespace().collect();
        let [who, amount] = args.as_slice() else {
            let usage = "Usage: give <player> <coins>, for example `give alice 10`.";
            return self.ctx.reply(LineKind::Error, usage).await;
        };
        let amount = match commands::count(amount, "The coins to give", u64::MAX) {
            Ok(amount) => amount,
            Err(why) => return self.ctx.reply(LineKind::Error, why).await,
        };
        let world = self.world().await?;
        let to = match names::find(&world, who) {
            Found::One(id) if id == self.ctx.id => {
                let why = "Giving coins to yourself changes nothing.";
                return self.ctx.reply(LineKind::Error, why).await;
            }
            Found::One(id) => id,
            Found::Ambiguous(forms) => {
                let why = format!("Several players are called that: {}.", forms.join(", "));
                return self.ctx.reply(LineKind::Error, why).await;
            }
            Found::None => {
                let why = format!("There is no player called {:?}.", commands::shorten(who));
                return self.ctx.reply(LineKind::Error, why).await;
            }
        };
        let shown = names::display_names(&world).remove(&to).unwrap_or_default();
        let outcome = self.ctx.player.apply(Change::Give { to, amount }).await?;
        let (kind, text) = match outcome {
            Outcome::Gave => (
                LineKind::Info,
                format!("You gave {} to {shown}.", self.ctx.content.coins(amount)),
            ),
            Outcome::Unaffordable { balance, .. } => (
                LineKind::Error,
                format!(
                    "You cannot give {}: you have {balance}.",
                    self.ctx.content.coins(amount)
                ),
            ),
            _ => (LineKind::Error, format!("{shown} cannot receive coins.")),
        };
        self.ctx.line(kind, text).await;
        Ok(())
    }

    /// `addr`: where friends can join this node.
    pub(super) async fn addr(&mut self) -> Result<(), KvError> {
        let addrs = match self.ctx.kv.addrs().await {
            Ok(addrs) => addrs,
            Err(KvError::Refused(why)) => {
                let text = format!("No address to share: {why}.");
                return self.ctx.reply(LineKind::Error, text).await;
            }
            Err(err) => return Err(err),
        };
        if addrs.is_empty() {
            let text = "This node is not listening on the network yet, so nobody can join it.";
            return self.ctx.reply(LineKind::Info, text).await;
        }
        self.ctx
            .line(
                LineKind::Info,
                "Friends can join you with `cmud --join <address>`:",
            )
            .await;
        for addr in addrs {
            self.ctx.line(LineKind::Info, format!("  {addr}")).await;
        }
        Ok(())
    }

    /// `join <multiaddr>`. The node answers once the dial is done, which can take many
    /// seconds: the answer is awaited briefly, then it is reported when it comes and input
    /// stays live meanwhile.
    pub(super) async fn join(&mut self, rest: &str) -> Result<(), KvError> {
        let args: Vec<&str> = rest.split_whitespace().collect();
        let [addr] = args.as_slice() else {
            let usage = "Usage: join <multiaddr>, as a friend's `addr` shows it.";
            return self.ctx.reply(LineKind::Error, usage).await;
        };
        let addr = (*addr).to_owned();
        let (tx, mut rx) = oneshot::channel();
        let ctx = self.ctx.clone();
        let dialled = addr.clone();
        tokio::spawn(async move {
            let result = ctx.kv.join(&dialled).await;
            // Nobody waits any more: report it here.
            if let Err(result) = tx.send(result) {
                report_join(&ctx, &dialled, result).await;
            }
        });
        let result = match tokio::time::timeout(JOIN_WAIT, &mut rx).await {
            Ok(result) => result.ok(),
            Err(_) => {
                // A result sent just now is taken here; after `close` the task reports it.
                rx.close();
                rx.try_recv().ok()
            }
        };
        match result {
            Some(result) => report_join(&self.ctx, &addr, result).await,
            None => {
                let text = format!(
                    "Dialling {} in the background; play on.",
                    commands::shorten(&addr)
                );
                self.ctx.line(LineKind::Info, text).await;
            }
        }
        Ok(())
    }
}

/// How long `join` waits for the dial before it lets the player play on.
const JOIN_WAIT: Duration = Duration::from_secs(1);

/// Tells how a `join` ended.
async fn report_join<K: Kv>(ctx: &Ctx<K>, addr: &str, result: Result<(), KvError>) {
    match result {
        Ok(()) => {
            let text = format!("Joined {addr}. The world syncs in the background.");
            ctx.line(LineKind::Info, text).await;
            ctx.send(Event::PeerJoined(addr.to_owned())).await;
        }
        Err(KvError::JoinFailed(why)) => {
            let text = format!("Could not join {}: {why}", commands::shorten(addr));
            ctx.line(LineKind::Error, text).await;
        }
        Err(err) => ctx.kv_error(&err).await,
    }
}
