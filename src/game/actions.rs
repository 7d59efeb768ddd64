//! The session's instant commands: greeting and naming, dispatch through the command table,
//! and the commands that answer at once (`stats`, `map`, `move`, `shop`, `buy`, `inv`, `who`,
//! `say`, `shout`, `top`, `give`, `addr`, `join`, `help`, `quit`). The battle and mining
//! commands start jobs (`jobs`); multiplayer views are in `social`.
//!
//! A player's mistake is an `Error` line, never a failure of the session.

use super::commands::{self, Command, Where};
use super::content::fill;
use super::events::{Event, LineKind, Mode};
use super::ledger;
use super::names;
use super::player::{Change, Outcome};
use super::schema::World;
use super::session::Session;
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
        match wanted.or(stored) {
            Some(name) => match names::validate(&name, max) {
                Ok(()) => self.enter(name).await,
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

    async fn ask_name(&mut self) {
        self.mode = Mode::Naming;
        for text in self.ctx.content.story.ask_name.clone() {
            self.ctx.line(LineKind::Info, text).await;
        }
    }

    /// A line typed at the name prompt.
    pub(super) async fn naming_line(&mut self, line: &str) {
        let (word, _) = commands::split(line);
        if commands::lookup(word).is_some_and(|c| c.name == "quit") {
            return self.quit().await;
        }
        match names::validate(word, self.ctx.content.rules.max_name_chars) {
            Ok(()) => {
                self.ctx.send(Event::NameChosen(word.to_owned())).await;
                self.enter(word.to_owned()).await;
            }
            Err(why) => self.ctx.line(LineKind::Error, why).await,
        }
    }

    async fn enter(&mut self, name: String) {
        let created = match self
            .ctx
            .player
            .apply(Change::Enter { name: name.clone() })
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
        let Some(command) = commands::lookup(word) else {
            let text = format!(
                "Unknown command {:?}. Type `help` for the list.",
                commands::shorten(word)
            );
            return self.ctx.line(LineKind::Error, text).await;
        };
        let battle = self.mode == Mode::Solving;
        let allowed = match command.at {
            Where::Both => true,
            Where::Main => !battle,
            Where::Battle => battle,
        };
        if !allowed {
            let text = if battle {
                format!(
                    "You are in a battle: use {}, or `resign` first.",
                    battle_list()
                )
            } else {
                format!("`{}` only works inside a battle (`solve`).", command.name)
            };
            return self.ctx.line(LineKind::Error, text).await;
        }
        self.run_command(command, rest).await;
    }

    async fn run_command(&mut self, command: &Command, rest: &str) {
        let result = match command.name {
            "help" => return self.help(rest).await,
            "stats" => return self.stats().await,
            "map" => self.map().await,
            "move" => self.walk(rest).await,
            "mine" => return self.mine(rest).await,
            "shop" => self.shop().await,
            "buy" => self.buy(rest).await,
            "inv" => self.inventory().await,
            "solve" => return self.solve(rest).await,
            "resign" => return self.resign().await,
            "stop" => return self.stop().await,
            "who" => self.who().await,
            "say" => self.chat(rest, false).await,
            "shout" => self.chat(rest, true).await,
            "top" => self.top().await,
            "give" => self.give(rest).await,
            "addr" => self.addr(rest).await,
            "join" => self.join(rest).await,
            "quit" => return self.quit().await,
            _ => Ok(()),
        };
        if let Err(err) = result {
            self.ctx.kv_error(&err).await;
        }
    }

    /// The current snapshot of the world.
    pub(super) async fn world(&self) -> Result<World, KvError> {
        Ok(World::from_pairs(
            self.ctx.kv.list(super::schema::PLAYERS_PREFIX).await?,
        ))
    }

    /// The player's rank index in `world`.
    pub(super) fn my_rank(&self, world: &World) -> usize {
        ledger::rank_index(&self.ctx.content, &world.player(&self.ctx.id))
    }

    async fn help(&mut self, topic: &str) {
        if !topic.is_empty() {
            let text = match commands::lookup(topic) {
                Some(c) => format!("{} {} - {}", c.name, c.usage, c.help),
                None => format!("No command {:?}.", commands::shorten(topic)),
            };
            let kind = if text.starts_with("No ") {
                LineKind::Error
            } else {
                LineKind::Info
            };
            return self.ctx.line(kind, text.replace("  -", " -")).await;
        }
        let battle = self.mode == Mode::Solving;
        let title = if battle {
            "Battle commands:"
        } else {
            "Commands:"
        };
        self.ctx.line(LineKind::Info, title).await;
        for c in commands::COMMANDS {
            if (battle && c.at == Where::Main) || (!battle && c.at == Where::Battle) {
                continue;
            }
            let head = format!("{} {}", c.name, c.usage);
            let text = format!("  {:<24} {}", head.trim_end(), c.help);
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
                ledger::balance(&world, &self.ctx.id)
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
    commands::COMMANDS
        .iter()
        .filter(|c| c.at != Where::Main)
        .map(|c| format!("`{}`", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `coins` -> `Coins`.
pub(super) fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
