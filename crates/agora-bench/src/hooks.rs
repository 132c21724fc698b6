//! What the bench needs from the node that it cannot depend on: the node crate depends on the bench (behind its
//! `bench` feature), never the other way round, so the node passes these in.

use crate::ScenarioResult;

/// The node internals some scenarios measure, provided by the binary that runs the bench.
pub trait Hooks {
    /// Runs the `lookup` scenario: blocked-IP lookups against exactly `rules` distinct rules of the node's own
    /// registry, loaded with its realistic workload; the node builds both and times them with
    /// [`lookup::measure`](crate::lookup::measure), so every build reports the same row.
    fn lookup(&self, rules: usize) -> ScenarioResult;
}
