//! What one subscription still has to be told: the newest state of each changed type, coalesced.
//!
//! A JMAP push only says "type T of account A is now at state S" (RFC 8620 section 7.1); a client that gets the
//! newest state needs none of the older ones, and section 7.2 lets the server coalesce. So however many changes pile
//! up while an endpoint is slow, down or its breaker open, a subscription holds at most one entry per data type:
//! the queue per subscription is bounded by construction (64 types), and a hanging endpoint costs memory in
//! proportion to its subscriptions, never to the change rate.

use agora::DataTypes;
use serde_json::{json, Map, Value};

/// The newest change id per data-type bit, for one subscription (sans-IO, unit-tested here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// `(bit, change id)`, sorted by bit, each bit once.
    states: Vec<(u8, u64)>,
}

impl Pending {
    /// A set holding `types` at `change_id`.
    pub fn new(change_id: u64, types: DataTypes) -> Self {
        let mut pending = Pending::default();
        pending.merge(change_id, types);
        pending
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Records that `types` changed to `change_id`; a type keeps the newer of the two states (change ids grow with
    /// every change of an account, and events from several nodes may arrive out of order).
    pub fn merge(&mut self, change_id: u64, types: DataTypes) {
        for bit in (0..64u8).filter(|b| types.bits() & (1 << b) != 0) {
            match self.states.binary_search_by_key(&bit, |&(b, _)| b) {
                Ok(i) => self.states[i].1 = self.states[i].1.max(change_id),
                Err(i) => self.states.insert(i, (bit, change_id)),
            }
        }
    }

    /// Folds `other` in, keeping the newer state of each type (a failed delivery put back behind newer changes).
    pub fn absorb(&mut self, other: Pending) {
        for (bit, change_id) in other.states {
            self.merge(change_id, DataTypes::from_bits(1 << bit));
        }
    }

    /// The RFC 8620 `StateChange` for `account_id`: each known type with its newest state (types this version has no
    /// name for are left out, as in a single change).
    pub fn state_change(&self, account_id: u32) -> Value {
        let per_type: Map<String, Value> = self
            .states
            .iter()
            .filter_map(|&(bit, change_id)| {
                let name = DataTypes::NAMES.get(usize::from(bit))?;
                Some((name.to_string(), json!(change_id.to_string())))
            })
            .collect();
        json!({
            "@type": "StateChange",
            "changed": { account_id.to_string(): per_type },
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::services::push::state_change_json;

    fn types(names: &[&str]) -> DataTypes {
        DataTypes::from_names(names.iter().copied()).expect("known types")
    }

    #[test]
    fn one_change_reads_as_the_uncoalesced_state_change() {
        let t = types(&["Email", "Mailbox"]);
        assert_eq!(Pending::new(7, t).state_change(42), state_change_json(42, 7, t));
    }

    #[test]
    fn coalescing_keeps_the_newest_state_of_each_type() {
        let mut p = Pending::new(5, types(&["Email"]));
        p.merge(9, types(&["Email", "Mailbox"]));
        p.merge(3, types(&["Mailbox", "Thread"]));
        assert_eq!(
            p.state_change(1),
            json!({"@type": "StateChange", "changed": {"1": {"Email": "9", "Mailbox": "9", "Thread": "3"}}})
        );
        // A failed delivery put back behind a newer change does not roll it back.
        let mut newer = Pending::new(12, types(&["Email"]));
        newer.absorb(p);
        assert_eq!(
            newer.state_change(1)["changed"]["1"],
            json!({"Email": "12", "Mailbox": "9", "Thread": "3"})
        );
    }

    proptest! {
        /// Whatever the order and grouping of changes, the result is each type's maximum, and it never holds more
        /// entries than there are types.
        #[test]
        fn merging_is_the_per_type_maximum_in_any_order(
            changes in prop::collection::vec((0u64..50, any::<u64>()), 0..40),
        ) {
            let mut forward = Pending::default();
            for &(id, bits) in &changes {
                forward.merge(id, DataTypes::from_bits(bits));
            }
            let mut backward = Pending::default();
            for &(id, bits) in changes.iter().rev() {
                backward.absorb(Pending::new(id, DataTypes::from_bits(bits)));
            }
            prop_assert_eq!(&forward, &backward);
            prop_assert!(forward.states.len() <= 64);
            for bit in 0..64u8 {
                let expected = changes.iter().filter(|(_, b)| b & (1 << bit) != 0).map(|(id, _)| *id).max();
                let got = forward.states.iter().find(|(b, _)| *b == bit).map(|(_, id)| *id);
                prop_assert_eq!(got, expected);
            }
        }
    }
}
