//! The shop commands: `shop`, `buy <hardware> [n|max]` and `inv`. The checks that guard
//! coins (unlocked, affordable) are made by the player's mutation task; this file turns its
//! answers into words.

use super::actions::capitalise;
use super::commands;
use super::content::{Content, Hardware};
use super::events::LineKind;
use super::ledger;
use super::player::{Change, Count, Outcome};
use super::session::Session;
use crate::rpc::{Kv, KvError};

impl<K: Kv> Session<K> {
    /// `shop`: the hardware this rank can buy.
    pub(super) async fn shop(&mut self) -> Result<(), KvError> {
        let world = self.world().await?;
        let rank = self.my_rank(&world);
        let content = &self.ctx.content;
        let mut lines = vec!["The shop sells:".to_owned()];
        for hw in content.rules.hardware.iter() {
            if content.unlocked(hw, rank) {
                lines.push(format!(
                    "  {:<12} {:<24} {} each, power {}",
                    hw.id,
                    hw.name,
                    content.coins(hw.price),
                    hw.power
                ));
            }
        }
        if content
            .rules
            .hardware
            .iter()
            .any(|hw| !content.unlocked(hw, rank))
        {
            lines.push("More machines arrive with each promotion.".to_owned());
        }
        for text in lines {
            self.ctx.line(LineKind::Info, text).await;
        }
        Ok(())
    }

    /// `buy <hardware> [n|max]`.
    pub(super) async fn buy(&mut self, rest: &str) -> Result<(), KvError> {
        let (hw_name, count) = match parse_buy(rest) {
            Ok(parsed) => parsed,
            Err(why) => return self.ctx.reply(LineKind::Error, why).await,
        };
        let content = self.ctx.content.clone();
        let Some(hw) = content.hardware(hw_name) else {
            let world = self.world().await?;
            let rank = self.my_rank(&world);
            let sold: Vec<&str> = content
                .rules
                .hardware
                .iter()
                .filter(|hw| content.unlocked(hw, rank))
                .map(|hw| hw.id.as_str())
                .collect();
            let text = format!(
                "Unknown hardware {:?}. The shop sells: {}.",
                commands::shorten(hw_name),
                sold.join(", ")
            );
            return self.ctx.reply(LineKind::Error, text).await;
        };
        let change = Change::Buy {
            hw: hw.id.clone(),
            count,
        };
        let outcome = self.ctx.player.apply(change).await?;
        let (kind, text) = bought(&content, hw, count, outcome);
        self.ctx.reply(kind, text).await
    }

    /// `inv`.
    pub(super) async fn inventory(&mut self) -> Result<(), KvError> {
        let world = self.world().await?;
        let content = &self.ctx.content;
        let me = world.player(&self.ctx.id);
        let rank = self.my_rank(&world);
        let mut lines = vec![format!(
            "{}: {}",
            capitalise(&content.rules.currency),
            ledger::balance(content, &world, &self.ctx.id)
        )];
        for hw in &content.rules.hardware {
            let owned = me.hardware.get(&hw.id).copied().unwrap_or(0);
            if content.unlocked(hw, rank) || owned > 0 {
                lines.push(format!("  {}: {owned}", hw.name));
            }
        }
        lines.push(format!("Power: {}", ledger::power(content, &me)));
        for text in lines {
            self.ctx.line(LineKind::Info, text).await;
        }
        Ok(())
    }
}

/// `buy`'s arguments: the hardware typed and how many.
fn parse_buy(rest: &str) -> Result<(&str, Count), String> {
    let args: Vec<&str> = rest.split_whitespace().collect();
    match args.as_slice() {
        [hw] => Ok((hw, Count::Exactly(1))),
        [hw, n] if n.eq_ignore_ascii_case("max") => Ok((hw, Count::Max)),
        [hw, n] => Ok((
            hw,
            Count::Exactly(commands::count(n, "The number to buy", u64::MAX)?),
        )),
        _ => Err("Usage: buy <hardware> [n|max], for example `buy cpu 3`.".to_owned()),
    }
}

/// What the shop says about a purchase.
fn bought(content: &Content, hw: &Hardware, count: Count, outcome: Outcome) -> (LineKind, String) {
    let currency = &content.rules.currency;
    let refuse = |text: String| (LineKind::Error, text);
    match outcome {
        Outcome::Bought { units, cost } => (
            LineKind::Info,
            format!(
                "You have purchased {units} {} for {}.",
                hw.name,
                content.coins(cost)
            ),
        ),
        Outcome::Locked => refuse(format!(
            "{} are not sold to you yet: they unlock at {}.",
            hw.name, hw.unlocked_at
        )),
        Outcome::Unaffordable { needed, balance } => refuse(match (count, needed) {
            (Count::Max, _) => format!(
                "You cannot afford a single one of the {} ({} each); you have {balance}.",
                hw.name,
                content.coins(hw.price)
            ),
            (_, Some(needed)) => format!(
                "You cannot afford that: it costs {} and you have {balance}.",
                content.coins(needed)
            ),
            (_, None) => format!("You cannot afford that many; you have {balance} {currency}."),
        }),
        other => refuse(format!("The shop cannot do that ({other:?}).")),
    }
}
