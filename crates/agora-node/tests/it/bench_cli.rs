//! `agora bench` at the command line: its exit statuses (2 for usage, as the contract says), with the `bench`
//! feature and without it. The scenarios themselves are exercised in the `streams` and `push` modules.

use std::process::{Command, Output};

/// Runs the `agora` binary cargo built for these tests with `args`.
fn agora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(args)
        .output()
        .expect("run agora")
}

#[cfg(feature = "bench")]
#[test]
fn bad_bench_options_are_usage_errors() {
    let out = agora(&["bench", "--scenario", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown --scenario \"nope\""),
        "{out:?}"
    );
    let out = agora(&["bench", "--mode", "nope", "--scenario", "lookup"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown --mode \"nope\""),
        "{out:?}"
    );
    // The bus scenarios need a server, and none was given.
    let out = agora(&["bench", "--scenario", "throughput"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server URL"), "{out:?}");
    let out = agora(&["bench", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("--nats-server-bin"),
        "{out:?}"
    );
}

#[cfg(not(feature = "bench"))]
#[test]
fn a_build_without_the_bench_feature_says_it_has_no_bench() {
    for args in [vec!["bench"], vec!["bench", "--scenario", "lookup", "--json"]] {
        let out = agora(&args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no benchmark"), "{out:?}");
    }
}
