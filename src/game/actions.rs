//! The session's instant commands: greeting and naming, dispatch through the command table,
//! and the commands that answer at once (`stats`, `map`, `move`, `shop`, `buy`, `inv`, `who`,
//! `say`, `shout`, `top`, `give`, `addr`, `join`, `help`, `quit`). The battle and mining
//! commands start jobs (`jobs`); multiplayer views are in `social`.
//!
//! A player's mistake is an `Error` line, never a failure of the session.

use std::sync::Arc;

use super::commands::{self, CommandId, Lookup};
use super::content::fill;
use super::events::{Event, LineKind, Mode};
use super::ledger;
use super::names;
use super::player::{Change, Outcome};
use super::schema::World;
use super::session::Session;
use super::social::ChatKind;
use crate::rpc::{Kv, KvError};

impl<K: Kv> Session<K> {
    /// The banner, then either the name question or entering with a known name.
    pub(super) async fn greet(&mut self) {
        for text in self.ctx.content.story.banner.clone() {
            self.ctx.line(LineKind::Info, text).await;
        }
        let stored = match self
            .ctx
            .kv
            .list(&super::schema::player_prefix(&self.ctx.id))
            .await
        {
            Ok(pairs) => World::from_pairs(pairs).player(&self.ctx.id).name,
            Err(err) => {
                self.ctx.kv_error(&err).await;
                None
            }
        };
        let wanted = self.wanted_name.take();
        let max = self.ctx.content.rules.max_name_chars;
        if wanted.is_none()
            && let Some(name) = &stored
        {
            // The world knows this player but the front end did not: let it remember.
            self.ctx.send(Event::NameChosen(name.clone())).await;
        }
        let from_flag = wanted.is_some();
        match wanted.or(stored) {
            Some(name) => match names::validate(&name, max) {
                Ok(()) => {
                    if from_flag {
                        self.warn_if_taken(&name, false).await;
                    }
                    self.enter(name).await
                }
                Err(why) => {
                    self.ctx
                        .line(LineKind::Error, format!("Cannot play as {name:?}: {why}"))
                        .await;
                    self.ask_name().await;
                }
            },
            None => self.ask_name().await,
        }
    }

    /// Warns if another player uses `name`; returns whether one does. `asking` says the
    /// player may still choose another.
    async fn warn_if_taken(&mut self, name: &str, asking: bool) -> bool {
        let world = match self.world().await {
            Ok(world) => world,
            Err(_) => return false,
        };
        let Some(shown) = names::taken(&world, &self.ctx.id, name) else {
            return false;
        };
        let text = if asking {
            format!(
                "Another player is already called {name}. Type {name} again to keep it (you will be shown as {shown}), or choose another name."
            )
        } else {
            format!("Another player is already called {name}: you are shown as {shown}.")
        };
        self.ctx.line(LineKind::Event, text).await;
        true
    }

    async fn ask_name(&mut self) {
        self.mode = Mode::Naming;
        for text in self.ctx.content.story.ask_name.clone() {
            self.ctx.line(LineKind::Info, text).await;
        }
    }

    /// A line typed at the name prompt. A name another player uses is warned about once;
    /// typed again, it is kept.
    pub(super) async fn naming_line(&mut self, line: &str) {
        let (word, _) = commands::split(line);
        if matches!(commands::lookup(word), Lookup::Found(c) if c.id == CommandId::Quit) {
            return self.quit().await;
        }
        if let Err(why) = names::validate(word, self.ctx.content.rules.max_name_chars) {
            return self.ctx.line(LineKind::Error, why.to_string()).await;
        }
        let confirmed = self
            .taken_name
            .take()
            .is_some_and(|taken| taken.eq_ignore_ascii_case(word));
        if !confirmed && self.warn_if_taken(word, true).await {
            self.taken_name = Some(word.to_owned());
            return;
        }
        self.ctx.send(Event::NameChosen(word.to_owned())).await;
        self.enter(word.to_owned()).await;
    }

    async fn enter(&mut self, name: String) {
        let created = match self
            .ctx
            .player
            .apply(Change::Enter {
                name: name.clone(),
                tell_key: self.ctx.tell.as_ref().map(|key| key.public_hex()),
            })
            .await
        {
            Ok(Outcome::Entered { created }) => created,
            Ok(_) => false,
            Err(err) => {
                self.ctx.kv_error(&err).await;
                return self.ask_name().await;
            }
        };
        self.mode = Mode::Mining;
        if created {
            let lines = self.ctx.content.story.intro.clone();
            self.tell(lines).await;
        } else {
            let story = &self.ctx.content.story;
            let lines = story
                .welcome_back
                .iter()
                .map(|text| fill(text, &[("name", &name)]))
                .collect();
            self.tell(lines).await;
            self.stats().await;
        }
    }

    /// A line typed at the main or battle prompt.
    pub(super) async fn command(&mut self, line: &str) {
        let (word, rest) = commands::split(line);
        let command = match commands::lookup(word) {
            Lookup::Found(command) => command,
            Lookup::Ambiguous(names) => {
                let text = format!(
                    "{:?} could be {}. Type more of it.",
                    commands::shorten(word),
                    or_list(&names)
                );
                return self.ctx.line(LineKind::Error, text).await;
            }
            Lookup::Unknown => {
                let text = format!(
                    "Unknown command {:?}. Type `help` for the list.",
                    commands::shorten(word)
                );
                return self.ctx.line(LineKind::Error, text).await;
            }
        };
        if !command.allowed(self.mode) {
            let text = if self.mode == Mode::Solving {
                format!(
                    "You are in a battle: use {}, or `resign` first.",
                    battle_list()
                )
            } else {
                format!("`{}` only works inside a battle (`solve`).", command.name)
            };
            return self.ctx.line(LineKind::Error, text).await;
        }
        if let Err(err) = self.run_command(command.id, rest).await {
            self.ctx.kv_error(&err).await;
        }
    }

    /// Runs a command: one arm per command of the table, and no other.
    async fn run_command(&mut self, id: CommandId, rest: &str) -> Result<(), KvError> {
        match id {
            CommandId::Help => self.help(rest).await,
            CommandId::Stats => self.stats().await,
            CommandId::Map => return self.map().await,
            CommandId::Look => return self.look().await,
            CommandId::Move => return self.walk(rest).await,
            CommandId::Mine => self.mine(rest).await,
            CommandId::Shop => return self.shop().await,
            CommandId::Buy => return self.buy(rest).await,
            CommandId::Inv => return self.inventory().await,
            CommandId::Solve => self.solve(rest).await,
            CommandId::Resign => self.resign().await,
            CommandId::Stop => self.stop().await,
            CommandId::Who => return self.who().await,
            CommandId::Say => return self.chat(rest, ChatKind::Say).await,
            CommandId::Emote => return self.chat(rest, ChatKind::Emote).await,
            CommandId::Shout => return self.chat(rest, ChatKind::Shout).await,
            CommandId::Tell => return self.tell_player(rest).await,
            CommandId::Mail => return self.mail().await,
            CommandId::Note => return self.note(rest).await,
            CommandId::Unnote => return self.unnote().await,
            CommandId::Top => return self.top().await,
            CommandId::Give => return self.give(rest).await,
            CommandId::Addr => return self.addr(rest).await,
            CommandId::Join => return self.join(rest).await,
            CommandId::Quit => self.quit().await,
        }
        Ok(())
    }

    /// The current snapshot of the world (the session's view, with the player's own writes).
    pub(super) async fn world(&self) -> Result<Arc<World>, KvError> {
        self.ctx.view.world(&self.ctx.kv).await
    }

    /// The player's rank index in `world`.
    pub(super) fn my_rank(&self, world: &World) -> usize {
        ledger::rank_index(&self.ctx.content, &world.player(&self.ctx.id))
    }

    async fn help(&mut self, topic: &str) {
        if !topic.is_empty() {
            let (kind, text) = match commands::lookup(topic) {
                Lookup::Found(c) => (LineKind::Info, format!("{} - {}", c.synopsis(), c.help)),
                Lookup::Ambiguous(names) => (
                    LineKind::Error,
                    format!(
                        "{:?} could be {}.",
                        commands::shorten(topic),
                        or_list(&names)
                    ),
                ),
                Lookup::Unknown => (
                    LineKind::Error,
                    format!("No command {:?}.", commands::shorten(topic)),
                ),
            };
            return self.ctx.line(kind, text).await;
        }
        let title = if self.mode == Mode::Solving {
            "Battle commands:"
        } else {
            "Commands:"
        };
        self.ctx.line(LineKind::Info, title).await;
        for c in commands::available(self.mode) {
            let text = format!("  {:<24} {}", c.synopsis(), c.help);
            self.ctx.line(LineKind::Info, text).await;
        }
    }

    /// `stats`.
    pub(super) async fn stats(&mut self) {
        let world = match self.world().await {
            Ok(world) => world,
            Err(err) => return self.ctx.kv_error(&err).await,
        };
        let content = &self.ctx.content;
        let me = world.player(&self.ctx.id);
        let rank = self.my_rank(&world);
        let shown = names::display_names(&world);
        let loc = me.loc.as_deref().unwrap_or_default();
        let mut lines = vec![
            format!(
                "Name: {}",
                shown.get(&self.ctx.id).cloned().unwrap_or_default()
            ),
            format!("Rank: {}", content.rank(rank).id),
            format!("Location: {}", content.location_name(loc)),
            format!(
                "{}: {}",
                capitalise(&content.rules.currency),
                ledger::balance(content, &world, &self.ctx.id)
            ),
            format!("Power: {}", ledger::power(content, &me)),
        ];
        if let Some(problem) = ledger::problem(content, &world, rank) {
            lines.push(format!(
                "Problem: {} of {} steps remaining",
                problem.remaining(),
                problem.size
            ));
        }
        for text in lines {
            self.ctx.line(LineKind::Info, text).await;
        }
    }

    async fn walk(&mut self, to: &str) -> Result<(), KvError> {
        let content = self.ctx.content.clone();
        let Some(loc) = content.location(to) else {
            let what = if to.is_empty() {
                "Move where? Type `move <location>`.".to_owned()
            } else {
                format!("(404) Location not found: {}", commands::shorten(to))
            };
            self.ctx.line(LineKind::Error, what).await;
            let ids: Vec<&str> = content
                .rules
                .locations
                .iter()
                .map(|l| l.id.as_str())
                .collect();
            let text = format!("Locations: {}", ids.join(", "));
            return self.ctx.reply(LineKind::Info, text).await;
        };
        let world = self.world().await?;
        if world.player(&self.ctx.id).loc.as_deref() == Some(loc.id.as_str()) {
            let text = format!("You are already at {}.", loc.name);
            return self.ctx.reply(LineKind::Info, text).await;
        }
        self.ctx.player.apply(Change::Move(loc.id.clone())).await?;
        let text = format!("You walk to {}.", loc.name);
        self.ctx.line(LineKind::Info, text).await;
        Ok(())
    }

    async fn quit(&mut self) {
        self.stop_job().await;
        if self.mode != Mode::Naming
            && let Err(err) = self.ctx.player.apply(Change::Leave).await
        {
            tracing::debug!(%err, "could not record leaving");
        }
        let name = match self.world().await {
            Ok(world) => names::display_names(&world)
                .remove(&self.ctx.id)
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        let text = if name.is_empty() {
            "Goodbye.".to_owned() // No character was made.
        } else {
            fill(&self.ctx.content.story.farewell, &[("name", &name)])
        };
        self.ctx.line(LineKind::Story, text).await;
        self.quitting = true;
    }
}

/// The battle commands, for messages.
fn battle_list() -> String {
    commands::available(Mode::Solving)
        .map(|c| format!("`{}`", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `a, b or c`.
pub(super) fn or_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// `a, b and c`.
pub(super) fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// `coins` -> `Coins`.
pub(super) fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
