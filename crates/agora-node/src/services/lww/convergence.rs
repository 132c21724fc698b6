//! The convergence check every registry built on the map must pass, for their property tests.

use std::fmt::Debug;

use proptest::prelude::*;

/// A registry as the convergence check drives it.
pub(crate) trait Replica: Default {
    /// One replicated operation (a write or a deletion).
    type Op;
    /// The registry's snapshot, equal for converged registries.
    type Snapshot: PartialEq + Debug;
    fn apply(&mut self, op: &Self::Op);
    fn snapshot(&self) -> Self::Snapshot;
    fn merge(&mut self, snapshot: Self::Snapshot);
}

/// Feeds `ops` in order to one replica and `shuffled` (the same operations in another order) to another, and the
/// two halves of `shuffled` split at `split` to two more that then merge each other's snapshot; checks that all
/// four end equal, and returns them for further checks.
pub(crate) fn replay_and_merge<R: Replica>(
    ops: &[R::Op],
    shuffled: &[R::Op],
    split: usize,
) -> Result<[R; 4], TestCaseError> {
    let replay = |ops: &[R::Op]| {
        let mut replica = R::default();
        ops.iter().for_each(|op| replica.apply(op));
        replica
    };
    let (a, b) = (replay(ops), replay(shuffled));
    prop_assert_eq!(a.snapshot(), b.snapshot());
    let split = split.min(shuffled.len());
    let (mut c, mut d) = (replay(&shuffled[..split]), replay(&shuffled[split..]));
    let c_snapshot = c.snapshot();
    c.merge(d.snapshot());
    d.merge(c_snapshot);
    prop_assert_eq!(c.snapshot(), a.snapshot());
    prop_assert_eq!(d.snapshot(), a.snapshot());
    Ok([a, b, c, d])
}
