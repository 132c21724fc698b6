//! Push subscriptions over HTTP: registration rules, the account cap, removal.

use axum::http::StatusCode;

use super::fixture::TestApp;

#[tokio::test]
async fn a_subscription_is_created_listed_and_removed() {
    let app = TestApp::new().await;
    let created = app
        .post(
            "/v1/push-subscriptions",
            r#"{"account_id":42,"url":"https://push.example.com/a","types":["Email"]}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let sub = created.json();
    let id = sub["id"].as_str().expect("id").to_string();
    assert_eq!(sub["account_id"], 42);
    let listed = app.get("/v1/push-subscriptions").await.json();
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    assert_eq!(
        app.delete(&format!("/v1/push-subscriptions/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.get("/v1/push-subscriptions").await.json(), serde_json::json!([]));
    let again = app.delete(&format!("/v1/push-subscriptions/{id}")).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(again.error().contains(&id));
}

#[tokio::test]
async fn urls_that_are_not_public_http_are_refused_by_name() {
    let app = TestApp::new().await;
    for (url, expected) in [
        ("ftp://push.example.com/", "http"),
        ("not a url", "invalid url"),
        ("http://127.0.0.1/hook", "refused"),
        ("http://[::ffff:0:127.0.0.1]/hook", "refused"),
        ("http://169.254.169.254/latest", "refused"),
        ("http://localhost:8080/", "refused"),
    ] {
        let body = format!(r#"{{"account_id":1,"url":"{url}"}}"#);
        let answer = app.post("/v1/push-subscriptions", &body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{url}: {}", answer.text);
        assert!(answer.error().contains(expected), "{url}: {}", answer.text);
    }
}

#[tokio::test]
async fn allow_networks_lets_an_internal_endpoint_through() {
    let app = TestApp::with_config("[push]\nallow-networks = [\"127.0.0.0/8\"]\n").await;
    let answer = app
        .post(
            "/v1/push-subscriptions",
            r#"{"account_id":1,"url":"http://127.0.0.1:9/hook"}"#,
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
}

#[tokio::test]
async fn an_account_at_its_cap_gets_409_and_other_accounts_do_not() {
    let app = TestApp::with_config("[push]\nmax-subscriptions-per-account = 2\n").await;
    let create = |account: u32| format!(r#"{{"account_id":{account},"url":"https://push.example.com/{account}"}}"#);
    for _ in 0..2 {
        assert_eq!(
            app.post("/v1/push-subscriptions", &create(7)).await.status,
            StatusCode::CREATED
        );
    }
    let full = app.post("/v1/push-subscriptions", &create(7)).await;
    assert_eq!(full.status, StatusCode::CONFLICT);
    assert!(full.error().contains("max-subscriptions-per-account"));
    assert_eq!(
        app.post("/v1/push-subscriptions", &create(8)).await.status,
        StatusCode::CREATED
    );
}
