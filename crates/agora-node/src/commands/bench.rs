//! `agora bench`: the benchmark lives in `agora-bench` (behind the default `bench` feature); this is its glue: the
//! node internals it measures ([`NodeHooks`]) and its error mapped to the binary's exit status ([`cli_error`]).
//! Without the feature, `agora bench` is a usage error that says so.

use crate::error::CliError;

/// Runs `agora bench` with the node's hooks.
#[cfg(feature = "bench")]
pub async fn run(args: agora_bench::BenchArgs) -> Result<(), CliError> {
    agora_bench::run(args, &NodeHooks).await.map_err(cli_error)
}

/// This build has no benchmark: says so, as a usage error (exit 2), whatever the options.
#[cfg(not(feature = "bench"))]
pub async fn run(_args: Vec<std::ffi::OsString>) -> Result<(), CliError> {
    Err(CliError::Bench {
        message: "this agora build has no benchmark: it was built without the `bench` feature (cargo's default; \
                  rebuild without --no-default-features to get `agora bench`)"
            .into(),
        usage: true,
    })
}

/// The bench's error as the binary's: usage errors exit 2, runtime errors 1 (`CliError::exit_code`).
#[cfg(feature = "bench")]
fn cli_error(error: agora_bench::BenchError) -> CliError {
    match error {
        agora_bench::BenchError::Usage(message) => CliError::Bench { message, usage: true },
        agora_bench::BenchError::Runtime(message) => CliError::Bench { message, usage: false },
    }
}

/// The node internals the bench measures; `agora-bench` cannot depend on this crate (it is the other way round).
#[cfg(feature = "bench")]
struct NodeHooks;

#[cfg(feature = "bench")]
impl agora_bench::Hooks for NodeHooks {
    fn lookup(&self, rules: usize) -> agora_bench::ScenarioResult {
        use crate::services::blocked_ips::workload::{self, Rng};
        use crate::services::blocked_ips::BlockedIpRegistry;

        let now_ms = agora::clock::now_ms();
        let mut rng = Rng::new(workload::SEED);
        let rules = workload::rules(rules, now_ms, &mut rng);
        let probes = workload::probes(&rules, agora_bench::lookup::PROBES, &mut rng);
        let mut registry = BlockedIpRegistry::new();
        for rule in &rules {
            registry.block(rule.clone());
        }
        agora_bench::lookup::measure(registry.len(), &probes, |ip| registry.lookup(ip, now_ms).is_some())
    }
}
