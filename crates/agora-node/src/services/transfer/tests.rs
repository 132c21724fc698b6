//! Paging a state through small messages, and the wire forms.

use std::net::{IpAddr, Ipv4Addr};

use agora::event::PushSubscription;
use agora::{DataTypes, Delivery, Event, NodeId, Origin};

use super::page::{page, PageIndexes};
use super::*;

fn delivery(time_us: u64, event: Event) -> Delivery {
    Delivery {
        origin: Origin::Agora(NodeId::new(1).expect("node id")),
        time_us,
        event,
    }
}

fn block(i: u32) -> Event {
    Event::BlockedIp {
        network: IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | i))),
        expires_at_ms: None,
        reason: Some(format!("rule {i}")),
    }
}

fn subscription(i: u32) -> Event {
    Event::PushSubscriptionSet(Box::new(PushSubscription::webhook(
        format!("sub-{i:06}"),
        i % 50,
        format!("https://push.example.com/{i}?secret=s{i}"),
        DataTypes::EMPTY,
    )))
}

/// A state with rules, push subscriptions and tombstones of both kinds.
fn populated(rules: u32, subscriptions: u32) -> NodeState {
    let state = NodeState::default();
    for i in 0..rules {
        state.apply(&delivery(10, block(i)));
    }
    for i in 0..subscriptions {
        state.apply(&delivery(10, subscription(i)));
    }
    for i in (0..rules).step_by(7) {
        let network = IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | i)));
        state.apply(&delivery(20, Event::UnblockedIp { network }));
    }
    for i in (0..subscriptions).step_by(5) {
        let id = format!("sub-{i:06}");
        state.apply(&delivery(20, Event::PushSubscriptionRemoved { id }));
    }
    // Client-token revocations: by account (many per event) and by token id.
    for i in 0..subscriptions / 10 {
        state.apply(&delivery(
            30,
            Event::TokensRevoked {
                accounts: (i * 10..i * 10 + 10).collect(),
                jti: Some(format!("token-{i:06}")),
                revoked_at_ms: 1_000 + u64::from(i),
                keep_until_ms: 10_000_000,
            },
        ));
    }
    state
}

/// Pages `from` into a fresh state with `budget`-byte pages; returns it and the number of pages.
fn transfer(from: &NodeState, budget: usize) -> (NodeState, usize) {
    let to = NodeState::default();
    let indexes = PageIndexes::default();
    let mut cursor = Cursor::START;
    let mut pages = 0;
    loop {
        let bytes = page(from, &indexes, 1, cursor, budget, true);
        assert!(
            bytes.len() <= budget,
            "a page of {} bytes exceeds {budget}",
            bytes.len()
        );
        let Reply::Page(page) = serde_json::from_slice(&bytes).expect("a page parses") else {
            panic!("not a page")
        };
        pages += 1;
        let next = page.next.clone();
        page.merge_into(&to);
        match next {
            Some(next) => cursor = next,
            None => return (to, pages),
        }
        assert!(pages < 100_000, "the transfer does not end");
    }
}

#[test]
fn small_pages_carry_everything_and_never_exceed_the_budget() {
    let from = populated(3_000, 700);
    let (to, pages) = transfer(&from, 8 * 1024);
    assert!(pages > 40, "{pages} pages: the state must not fit in a few");
    assert_eq!(
        to.blocked().snapshot(),
        from.blocked().snapshot(),
        "rules and tombstones"
    );
    assert_eq!(
        to.push().snapshot(),
        from.push().snapshot(),
        "subscriptions and tombstones"
    );
    assert_eq!(from.revocations().len(), 770);
    assert_eq!(
        to.revocations().after(None, usize::MAX),
        from.revocations().after(None, usize::MAX),
        "revocations"
    );
}

#[test]
fn a_requester_of_an_earlier_release_is_never_sent_the_revocations_cursor() {
    let from = populated(10, 10);
    let bytes = page(
        &from,
        &PageIndexes::default(),
        4,
        Cursor::PushTombstones(None),
        1 << 20,
        false,
    );
    let text = std::str::from_utf8(&bytes).expect("utf-8");
    assert!(text.ends_with(r#""next":null}"#), "{text}");
    assert!(!text.contains("revocations"), "{text}");
}

#[test]
fn an_empty_state_is_one_page_and_a_large_budget_takes_few() {
    let (to, pages) = transfer(&NodeState::default(), 1 << 20);
    assert_eq!((pages, to.blocked_rule_count()), (1, 0));
    let from = populated(3_000, 700);
    let (_, pages) = transfer(&from, 1 << 20);
    assert!(pages <= 2, "{pages} pages for ~500 KB in 1 MiB pages");
}

#[test]
fn an_entry_too_large_for_any_page_is_skipped_not_looped_on() {
    let from = NodeState::default();
    from.apply(&delivery(
        10,
        Event::BlockedIp {
            network: "192.0.2.1/32".parse().expect("network"),
            expires_at_ms: None,
            reason: Some("x".repeat(4096)),
        },
    ));
    from.apply(&delivery(10, block(1)));
    let stored = from.blocked().get(&"192.0.2.1/32".parse().expect("network")).cloned();
    assert_eq!(
        stored.and_then(|r| r.reason).map(|r| r.len()),
        Some(crate::services::state::MAX_REASON),
        "a reason off the bus is cut on apply"
    );
    // Pages too small for even the cut rule.
    let (to, _) = transfer(&from, 1200);
    assert_eq!(
        to.blocked_rule_count(),
        1,
        "the rule that fits arrives; the oversized one is left out"
    );
}

#[test]
fn subscriptions_with_ids_or_urls_too_long_are_not_kept() {
    let state = NodeState::default();
    let long_id = Event::PushSubscriptionSet(Box::new(PushSubscription::webhook(
        "i".repeat(crate::services::state::MAX_PUSH_ID + 1),
        1,
        "https://push.example.com/",
        DataTypes::EMPTY,
    )));
    let long_url = Event::PushSubscriptionSet(Box::new(PushSubscription::webhook(
        "ok",
        1,
        format!(
            "https://push.example.com/{}",
            "u".repeat(crate::services::state::MAX_PUSH_URL)
        ),
        DataTypes::EMPTY,
    )));
    assert!(!state.apply(&delivery(10, long_id)));
    assert!(!state.apply(&delivery(10, long_url)));
    assert_eq!(state.push_subscription_count(), 0);
}

#[test]
fn requests_and_replies_have_a_stable_json_form() {
    let request = PageRequest {
        node_id: 2,
        instance_id: "00000000000000ff".into(),
        cursor: Cursor::Push(Some("sub-1".into())),
        revocations: false,
    };
    assert_eq!(
        serde_json::to_string(&request).expect("json"),
        r#"{"node_id":2,"instance_id":"00000000000000ff","cursor":{"section":"push","after":"sub-1"}}"#
    );
    let starting = serde_json::to_string(&Reply::Starting { node_id: 3 }).expect("json");
    assert_eq!(starting, r#"{"status":"starting","node_id":3}"#);
    let bytes = page(
        &NodeState::default(),
        &PageIndexes::default(),
        4,
        Cursor::START,
        4096,
        false,
    );
    assert_eq!(
        std::str::from_utf8(&bytes).expect("utf-8"),
        r#"{"status":"page","node_id":4,"rules":[],"rule_tombstones":[],"push":[],"push_tombstones":[],"next":null}"#
    );
}

/// A joining node gets a JMAP subscription whole: verified or not, its keys, expiry and verification code (the
/// `PATCH` may reach the joiner).
#[test]
fn jmap_subscriptions_transfer_with_their_verification_state() {
    let from = NodeState::default();
    let jmap = PushSubscription {
        device_client_id: Some("phone".into()),
        keys: Some(agora::event::PushKeys {
            p256dh: "p".repeat(87),
            auth: "a".repeat(22),
        }),
        expires_at_ms: Some(4_000_000_000_000),
        verification_code: Some("c".repeat(22)),
        verified: true,
        ..PushSubscription::webhook("jmap-1", 3, "https://push.example.com/d", DataTypes::EMPTY)
    };
    let unverified = PushSubscription {
        id: "jmap-2".into(),
        verified: false,
        ..jmap.clone()
    };
    for sub in [&jmap, &unverified] {
        assert!(from.apply(&delivery(10, Event::PushSubscriptionSet(Box::new(sub.clone())))));
    }
    let (to, _) = transfer(&from, 4096);
    assert_eq!(to.push().get("jmap-1").map(|s| &s.subscription), Some(&jmap));
    assert_eq!(to.push().get("jmap-2").map(|s| &s.subscription), Some(&unverified));
}

/// Oversized RFC 8620 fields from the bus are not kept (anyone on NATS may publish them).
#[test]
fn subscriptions_with_oversized_jmap_fields_are_not_kept() {
    let state = NodeState::default();
    let huge = |f: fn(&mut PushSubscription)| {
        let mut sub = PushSubscription::webhook("x", 1, "https://push.example.com/", DataTypes::EMPTY);
        f(&mut sub);
        Event::PushSubscriptionSet(Box::new(sub))
    };
    assert!(!state.apply(&delivery(10, huge(|s| s.device_client_id = Some("d".repeat(256))))));
    assert!(!state.apply(&delivery(
        10,
        huge(|s| s.keys = Some(agora::event::PushKeys {
            p256dh: "p".repeat(129),
            auth: String::new()
        }))
    )));
    assert!(!state.apply(&delivery(10, huge(|s| s.verification_code = Some("c".repeat(129))))));
    assert_eq!(state.push_subscription_count(), 0);
}
