//! The player task's social changes: chat lines, notes, tells and their read marks, and the
//! promotions earned by a share of a problem someone else finished. Part of `player`: every
//! write is to the player's own keys, one change at a time.

use super::{Outcome, PlayerTask};
use crate::game::schema::{ChatLine, Note, Scope, World, field};
use crate::game::{claims, ledger, supports};
use crate::rpc::{Kv, KvError};

impl<K: Kv> PlayerTask<K> {
    /// Takes an owed promotion (see [`ledger::owed_promotion`]).
    pub(super) async fn claim(&mut self, world: &World) -> Result<Outcome, KvError> {
        let Some((rank, epoch)) = ledger::owed_promotion(&self.content, world, &self.id) else {
            return Ok(Outcome::Done);
        };
        let next = rank + 1;
        let rank_id = &self.content.rank(rank).id;
        let size = self.content.problem_size(rank, epoch).unwrap_or(u64::MAX);
        // The record names the work that made the problem fall, as far as this world shows
        // it (or the finisher's record names it): owed only once it reaches the size.
        let named = claims::fallen_work(&self.content, world, rank_id, epoch, size);
        let writes = vec![
            (
                self.key(&field::solved(rank_id)),
                supports::encode_solved(epoch, &named),
            ),
            (self.key(field::RANK), self.content.rank(next).id.clone()),
        ];
        self.kv.put_many(&writes).await?;
        Ok(Outcome::Promoted { rank: next })
    }

    pub(super) async fn note(&mut self, loc: String, text: String) -> Result<Outcome, KvError> {
        let me = self.own().await?.player(&self.id);
        let cap = self.content.rules.notes.max_per_player;
        let free = (0..cap).find(|slot| !me.notes.contains_key(slot));
        let (slot, replaced) = match free {
            Some(slot) => (slot, None),
            None => {
                let (slot, oldest) = me
                    .notes
                    .iter()
                    .filter(|(slot, _)| **slot < cap)
                    .min_by_key(|(slot, note)| (note.at_ms, **slot))
                    .map(|(slot, note)| (*slot, note.clone()))
                    .unwrap_or((0, Note::default()));
                (slot, Some(oldest))
            }
        };
        let note = Note {
            at_ms: self.clock.now_ms(),
            loc,
            text,
        };
        self.kv
            .put(&self.key(&field::note(slot)), &note.encode())
            .await?;
        Ok(Outcome::Noted { replaced })
    }

    pub(super) async fn tell(&mut self, to: String, sealed: String) -> Result<Outcome, KvError> {
        let world = self.world().await?;
        if to == self.id || !world.player(&to).exists() {
            return Ok(Outcome::NoSuchPlayer);
        }
        let me = world.player(&self.id);
        let sent = me
            .tells
            .keys()
            .filter(|(r, _)| *r == to)
            .map(|(_, seq)| *seq)
            .max()
            .unwrap_or(0);
        let read = world.player(&to).read.get(&self.id).copied().unwrap_or(0);
        let floor = format!("tell/{to}");
        let seq = self.counter(&floor, sent.max(read)).saturating_add(1);
        self.floors.insert(floor, seq);
        self.kv
            .put(&self.key(&field::tell(&to, seq)), &sealed)
            .await?;
        Ok(Outcome::Done)
    }

    pub(super) async fn chat(&mut self, scope: Scope, text: String) -> Result<Outcome, KvError> {
        let me = self.own().await?.player(&self.id);
        let last = me.chat.iter().map(|line| line.seq).max().unwrap_or(0);
        let seq = self.counter("chat", last).saturating_add(1);
        self.floors.insert("chat".to_owned(), seq);
        let line = ChatLine {
            seq,
            at_ms: self.clock.now_ms(),
            scope,
            text,
        };
        let slot = seq % self.content.rules.chat.ring;
        self.kv
            .put(&self.key(&field::chat(slot)), &line.encode())
            .await?;
        Ok(Outcome::Done)
    }

    pub(super) async fn unnote(&mut self, loc: &str) -> Result<Outcome, KvError> {
        let me = self.own().await?.player(&self.id);
        let slots: Vec<u64> = me
            .notes
            .iter()
            .filter(|(_, note)| note.loc == loc)
            .map(|(slot, _)| *slot)
            .collect();
        for slot in &slots {
            self.kv.delete(&self.key(&field::note(*slot))).await?;
        }
        Ok(Outcome::Unnoted(slots.len()))
    }

    pub(super) async fn read(&mut self, from: String, seq: u64) -> Result<Outcome, KvError> {
        let me = self.own().await?.player(&self.id);
        let read_field = field::read(&from);
        let before = me.read.get(&from).copied().unwrap_or(0);
        let read = self.counter(&read_field, before).max(seq);
        let mut writes = Vec::new();
        self.bump(&mut writes, &read_field, read);
        self.kv.put_many(&writes).await?;
        Ok(Outcome::Done)
    }

    /// Deletes the player's tells that their recipients have read.
    pub(super) async fn tidy(&mut self) -> Result<Outcome, KvError> {
        let world = self.world().await?;
        let me = world.player(&self.id);
        for (to, seq) in me.tells.keys() {
            let read = world.player(to).read.get(&self.id).copied().unwrap_or(0);
            if *seq <= read {
                self.kv.delete(&self.key(&field::tell(to, *seq))).await?;
            }
        }
        Ok(Outcome::Done)
    }
}
