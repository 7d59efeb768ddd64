//! Places: `look` (the location's description from the rules, who is here, the notes left
//! here, where one can go), and notes (`note <text>`, `unnote`), which stay in the world until
//! their author takes them down or leaves more than the cap allows.

use super::commands;
use super::events::LineKind;
use super::names;
use super::news;
use super::player::{Change, Outcome};
use super::session::Session;
use crate::rpc::{Kv, KvError};

impl<K: Kv> Session<K> {
    /// `look`.
    pub(super) async fn look(&mut self) -> Result<(), KvError> {
        let world = self.world().await?;
        let content = self.ctx.content.clone();
        let now = self.ctx.clock.now_ms();
        let shown = names::display_names(&world);
        let here = world.player(&self.ctx.id).loc.unwrap_or_default();
        let Some(place) = content.location(&here) else {
            return self
                .ctx
                .reply(LineKind::Error, "You are nowhere the map knows.")
                .await;
        };
        let mut lines = vec![
            format!("--- {} ({}) ---", place.name, place.id),
            place.description.clone(),
        ];
        let mut others: Vec<String> = world
            .characters()
            .filter(|p| p.id != self.ctx.id && p.loc.as_deref() == Some(place.id.as_str()))
            .filter(|p| news::online(&content, p, now))
            .map(|p| shown.get(&p.id).cloned().unwrap_or_default())
            .collect();
        others.sort_by_key(|name| name.to_lowercase());
        lines.push(if others.is_empty() {
            "Nobody else is here.".to_owned()
        } else {
            format!("Here: {}.", others.join(", "))
        });
        let mut notes: Vec<(u64, String)> = world
            .characters()
            .flat_map(|p| {
                let author = shown.get(&p.id).cloned().unwrap_or_default();
                p.notes
                    .values()
                    .filter(|note| note.loc == place.id)
                    .map(move |note| (note.at_ms, format!("  {author}: {}", note.text)))
            })
            .collect();
        notes.sort();
        if !notes.is_empty() {
            lines.push("Notes left here:".to_owned());
            lines.extend(notes.into_iter().map(|(_, text)| text));
        }
        let exits: Vec<&str> = content
            .rules
            .locations
            .iter()
            .filter(|loc| loc.id != place.id)
            .map(|loc| loc.id.as_str())
            .collect();
        lines.push(format!("You can go to: {}.", exits.join(", ")));
        for text in lines {
            self.ctx.line(LineKind::Info, text).await;
        }
        Ok(())
    }

    /// `note <text>`.
    pub(super) async fn note(&mut self, text: &str) -> Result<(), KvError> {
        let text = commands::clean_text(text);
        let rules = &self.ctx.content.rules.notes;
        if text.is_empty() {
            let why = "Note what? Type `note <text>`; `look` shows the notes here.";
            return self.ctx.reply(LineKind::Error, why).await;
        }
        if text.chars().count() > rules.max_chars {
            let why = format!(
                "That note is too long: at most {} characters.",
                rules.max_chars
            );
            return self.ctx.reply(LineKind::Error, why).await;
        }
        let world = self.world().await?;
        let loc = world.player(&self.ctx.id).loc.unwrap_or_default();
        let change = Change::Note {
            loc,
            text: text.clone(),
        };
        let outcome = self.ctx.player.apply(change).await?;
        self.ctx
            .line(LineKind::Info, format!("You leave a note here: {text}"))
            .await;
        if let Outcome::Noted {
            replaced: Some(old),
        } = outcome
        {
            let max = self.ctx.content.rules.notes.max_per_player;
            let text = format!(
                "You may leave {max} notes in all, so your oldest ({} at {}) was taken down.",
                commands::shorten(&old.text),
                self.ctx.content.location_name(&old.loc)
            );
            self.ctx.line(LineKind::Info, text).await;
        }
        Ok(())
    }

    /// `unnote`: takes down the player's notes here.
    pub(super) async fn unnote(&mut self) -> Result<(), KvError> {
        let world = self.world().await?;
        let loc = world.player(&self.ctx.id).loc.unwrap_or_default();
        let text = match self.ctx.player.apply(Change::Unnote { loc }).await? {
            Outcome::Unnoted(0) => "You have no note here.".to_owned(),
            Outcome::Unnoted(1) => "You take down your note.".to_owned(),
            Outcome::Unnoted(n) => format!("You take down your {n} notes."),
            other => format!("Your notes stay ({other:?})."),
        };
        self.ctx.reply(LineKind::Info, text).await
    }
}
