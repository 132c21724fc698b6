//! The blocked-IP list over HTTP: the statuses and bodies the contract gives, the rules' errors by name.

use axum::http::StatusCode;

use super::fixture::TestApp;

#[tokio::test]
async fn a_block_is_answered_as_stored_then_found_then_removed() {
    let app = TestApp::new().await;
    let created = app
        .post(
            "/v1/blocked-ips",
            r#"{"network":"203.0.113.7","ttl":"1h","reason":"auth failures"}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let rule = created.json();
    assert_eq!(rule["network"], "203.0.113.7/32");
    assert_eq!(rule["reason"], "auth failures");
    assert!(rule["expires_at_ms"].as_u64().is_some());
    let found = app.get("/v1/blocked-ips/203.0.113.7").await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.json()["blocked"], true);
    let listed = app.get("/v1/blocked-ips").await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        app.delete("/v1/blocked-ips/203.0.113.7").await.status,
        StatusCode::NO_CONTENT
    );
    let gone = app.get("/v1/blocked-ips/203.0.113.7").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.json()["blocked"], false);
}

#[tokio::test]
async fn a_network_covers_its_addresses_and_deletes_by_percent_encoded_cidr() {
    let app = TestApp::new().await;
    assert_eq!(
        app.post("/v1/blocked-ips", r#"{"network":"198.51.100.0/24"}"#)
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(app.get("/v1/blocked-ips/198.51.100.200").await.status, StatusCode::OK);
    assert_eq!(
        app.get("/v1/blocked-ips/198.51.101.1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete("/v1/blocked-ips/198.51.100.0%2F24").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get("/v1/blocked-ips/198.51.100.200").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_blocks_are_400_naming_what_is_wrong() {
    let app = TestApp::new().await;
    for (body, expected) in [
        (r#"{"network":"not-an-ip"}"#, "not-an-ip"),
        (r#"{"network":"192.0.2.1","ttl":"soon"}"#, "invalid ttl"),
        (r#"{"network":"192.0.2.1","ttl":"10ms"}"#, "out of range"),
        (r#"{"network":"192.0.2.1","colour":"red"}"#, "colour"),
        (r#"{"network":"0.0.0.0/0"}"#, "force"),
        (r#"{"network":"::ffff:0:0/95"}"#, "force"),
    ] {
        let answer = app.post("/v1/blocked-ips", body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {}", answer.text);
        assert!(answer.error().contains(expected), "{body}: {}", answer.text);
    }
    let lookup = app.get("/v1/blocked-ips/not-an-ip").await;
    assert_eq!(lookup.status, StatusCode::BAD_REQUEST);
    assert!(lookup.error().contains("invalid IP address"));
}

#[tokio::test]
async fn force_lifts_the_breadth_rule() {
    let app = TestApp::with_config("[http]\nmin-block-prefix-v4 = 16\n").await;
    let refused = app.post("/v1/blocked-ips", r#"{"network":"10.0.0.0/8"}"#).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.error().contains("/16"), "{}", refused.text);
    let forced = app
        .post("/v1/blocked-ips", r#"{"network":"10.0.0.0/8","force":true}"#)
        .await;
    assert_eq!(forced.status, StatusCode::CREATED, "{}", forced.text);
}

#[tokio::test]
async fn the_list_streams_thousands_of_rules_as_one_array_in_network_order() {
    let app = TestApp::new().await;
    for i in 0..2_500u32 {
        let ip = std::net::Ipv4Addr::from(0x0b00_0000 + i * 7);
        let answer = app.post("/v1/blocked-ips", &format!(r#"{{"network":"{ip}"}}"#)).await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    let listed = app.get("/v1/blocked-ips").await;
    assert_eq!(listed.headers["content-type"], "application/json");
    let rules = listed.json();
    let rules = rules.as_array().expect("an array");
    assert_eq!(rules.len(), 2_500, "across several pages");
    let networks: Vec<ipnet::IpNet> = rules
        .iter()
        .map(|r| r["network"].as_str().expect("network").parse().expect("a network"))
        .collect();
    assert!(networks.windows(2).all(|w| w[0] < w[1]), "in network order");
}
