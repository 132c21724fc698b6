//! Publishing events and reading them back through the long poll.

use axum::http::StatusCode;

use super::fixture::TestApp;

#[tokio::test]
async fn an_event_is_accepted_and_read_back_whole_from_the_poll() {
    let app = TestApp::new().await;
    let next = app.get("/v1/events/poll").await.json()["next"]
        .as_str()
        .expect("next")
        .to_string();
    let event = r#"{"type":"state_change","account_id":42,"change_id":7,"types":["Email","Mailbox"]}"#;
    let accepted = app.post("/v1/events", event).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    assert_eq!(accepted.json(), serde_json::json!({"accepted": true}));
    let page = app.get(&format!("/v1/events/poll?after={next}&wait=5")).await.json();
    let item = &page["events"][0];
    assert!(item["id"].is_string(), "{page}");
    assert_eq!(item["event"]["type"], "state_change");
    assert_eq!(item["event"]["change_id"], 7);
    assert!(
        item["event"].get("id").is_none(),
        "the id stays beside the event: {page}"
    );
}

#[tokio::test]
async fn unknown_types_and_bad_polls_are_400() {
    let app = TestApp::new().await;
    let unknown = app.post("/v1/events", r#"{"type":"no_such_event"}"#).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.error().contains("no_such_event"), "{}", unknown.text);
    for (path, expected) in [
        ("/v1/events/poll?wait=61", "wait"),
        ("/v1/events/poll?limit=0", "limit"),
        ("/v1/events/poll?types=nope", "nope"),
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(answer.error().contains(expected), "{path}: {}", answer.text);
    }
}

#[tokio::test]
async fn an_unknown_or_empty_resume_id_is_handled_as_the_contract_says() {
    let app = TestApp::new().await;
    let unknown = app.get("/v1/events/poll?after=abc-1").await.json();
    assert_eq!(unknown["events"][0]["event"]["type"], "resync");
    assert_eq!(unknown["events"][0]["event"]["reason"], "unknown_id");
    let empty = app.get("/v1/events/poll?after=").await.json();
    assert_eq!(
        empty["events"],
        serde_json::json!([]),
        "an empty id starts from now: {empty}"
    );
}

#[tokio::test]
async fn replicated_state_published_directly_gets_its_endpoints_checks() {
    let app = TestApp::new().await;
    let broad = app
        .post("/v1/events", r#"{"type":"blocked_ip","network":"0.0.0.0/0"}"#)
        .await;
    assert_eq!(broad.status, StatusCode::BAD_REQUEST);
    assert!(broad.error().contains("force"), "{}", broad.text);
    let internal = app
        .post(
            "/v1/events",
            r#"{"type":"push_subscription_set","id":"s1","account_id":1,"url":"http://10.0.0.1/","types":[]}"#,
        )
        .await;
    assert_eq!(internal.status, StatusCode::BAD_REQUEST, "{}", internal.text);
}

#[tokio::test]
async fn an_eventsource_with_a_bad_filter_is_400_naming_it() {
    let app = TestApp::new().await;
    for (path, expected) in [
        ("/v1/eventsource?accounts=x", "account"),
        ("/v1/eventsource?types=Nope", "Nope"),
        ("/v1/eventsource?ping=99999", "ping"),
        ("/v1/eventsource?closeafter=never", "closeafter"),
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(answer.error().contains(expected), "{path}: {}", answer.text);
    }
    let many: Vec<String> = (0..1_001).map(|a| a.to_string()).collect();
    let answer = app.get(&format!("/v1/eventsource?accounts={}", many.join(","))).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("at most 1000"), "{}", answer.text);
}
