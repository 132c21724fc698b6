//! Unit tests of the `[store.<id>]` parser.

use super::*;

#[test]
fn addresses_are_normalised() {
    let cases = [
        ("nats1:4222", "nats://nats1:4222"),
        ("nats1", "nats://nats1:4222"),
        ("nats://nats1:1234", "nats://nats1:1234"),
        ("NATS://nats1:1234", "nats://nats1:1234"),
        ("tls://nats1:4443", "tls://nats1:4443"),
        ("[::1]:4222", "nats://[::1]:4222"),
        ("[::1]", "nats://[::1]:4222"),
        ("nats://[2001:db8::1]:5222", "nats://[2001:db8::1]:5222"),
        ("10.0.0.1:4222", "nats://10.0.0.1:4222"),
    ];
    for (raw, expected) in cases {
        assert_eq!(normalize_address(raw).as_deref(), Ok(expected), "{raw}");
    }
}

#[test]
fn bad_addresses_are_rejected() {
    for raw in [
        "",
        "ws://nats1:4222",
        "nats1:0",
        "nats1:99999",
        "nats1:",
        ":4222",
        "nats://",
        "::1:4222",
        "[::1",
        "[nope]:4222",
        "nats1:4222/path",
        "nats 1:4222",
    ] {
        assert!(normalize_address(raw).is_err(), "{raw:?} accepted");
    }
    let error = normalize_address("nats://u:hunter2secret@nats1:4222").unwrap_err();
    assert!(!error.contains("hunter2secret"), "{error}");
}

#[test]
fn subjects() {
    assert!(check_subject("agora.events").is_ok());
    assert!(check_subject("agora").is_ok());
    for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b"] {
        assert!(check_subject(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn stream_names() {
    assert!(check_stream_name("AGORA").is_ok());
    assert!(check_stream_name("agora-prod_2").is_ok());
    for bad in ["", "a.b", "a b", "a*", "a>", "a/b", "a\\b", &"x".repeat(256)] {
        assert!(check_stream_name(bad).is_err(), "{bad:?}");
    }
}
