//! Push subscriptions over HTTP: registration rules, the account cap, removal.

use axum::http::{Method, StatusCode};

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

/// RFC 8291 section 5's user agent key and auth secret: a valid pair.
const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

fn jmap_subscription(keys: &str, expires: &str) -> String {
    format!(
        r#"{{"account_id":7,"device_client_id":"phone-1","url":"https://push.example.com/d/1","types":null,
            "keys":{keys},"expires":{expires}}}"#
    )
}

#[tokio::test]
async fn rfc_8620_fields_are_checked_and_named() {
    let app = TestApp::with_config("[push]\nmax-expiry = \"1d\"\n").await;
    let good_keys = format!(r#"{{"p256dh":"{P256DH}","auth":"{AUTH}"}}"#);
    let cases = [
        (
            r#"{"p256dh":"!!","auth":"BTBZMqHH6r4Tts7J_aSIgg"}"#.to_string(),
            "null".to_string(),
            "keys.p256dh",
        ),
        (
            format!(r#"{{"p256dh":"{}","auth":"{AUTH}"}}"#, &P256DH[..60]),
            "null".into(),
            "keys.p256dh: 45 bytes",
        ),
        (
            format!(r#"{{"p256dh":"{P256DH}","auth":"AAAA"}}"#),
            "null".into(),
            "keys.auth: 3 bytes",
        ),
        (format!(r#"{{"p256dh":"{P256DH}"}}"#), "null".into(), "auth"),
        (
            good_keys.clone(),
            r#""2026-12-10""#.into(),
            "expires: not an RFC 3339 UTC date",
        ),
        (
            good_keys.clone(),
            r#""2001-01-01T00:00:00Z""#.into(),
            "expires: in the past",
        ),
    ];
    for (keys, expires, expected) in cases {
        let answer = app
            .post("/v1/push-subscriptions", &jmap_subscription(&keys, &expires))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{keys} {expires}: {}",
            answer.text
        );
        assert!(answer.error().contains(expected), "{expected}: {}", answer.text);
        assert!(!answer.text.contains(AUTH), "a key is never echoed: {}", answer.text);
    }
    let long_device = format!(
        r#"{{"account_id":7,"device_client_id":"{}","url":"https://push.example.com/d"}}"#,
        "d".repeat(256)
    );
    let answer = app.post("/v1/push-subscriptions", &long_device).await;
    assert!(
        answer.error().contains("device_client_id of 256 bytes"),
        "{}",
        answer.text
    );

    // Valid, with an expiry a year ahead: clamped to max-expiry (1 day); not verified; no code or keys shown.
    let created = app
        .post(
            "/v1/push-subscriptions",
            &jmap_subscription(&good_keys, r#""2099-01-01T00:00:00Z""#),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let sub = created.json();
    assert_eq!(sub["verified"], false);
    assert_eq!(sub["device_client_id"], "phone-1");
    let expires = humantime::parse_rfc3339(sub["expires"].as_str().expect("expires")).expect("RFC 3339");
    let ahead = expires
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(ahead <= std::time::Duration::from_secs(86_400) && ahead > std::time::Duration::from_secs(86_000));
    let listed = app.get("/v1/push-subscriptions").await.text;
    assert!(!listed.contains("verification") && !listed.contains(AUTH), "{listed}");
}

#[tokio::test]
async fn patch_verifies_with_the_right_code_only_and_changes_types_and_expiry() {
    let app = TestApp::new().await;
    let keys = format!(r#"{{"p256dh":"{P256DH}","auth":"{AUTH}"}}"#);
    let created = app
        .post("/v1/push-subscriptions", &jmap_subscription(&keys, "null"))
        .await;
    let id = created.json()["id"].as_str().expect("id").to_string();
    let path = format!("/v1/push-subscriptions/{id}");
    let patch = |body: &'static str| app.call(Method::PATCH, &path, Some(body));
    let wrong = patch(r#"{"verification_code":"not-the-code"}"#).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.text);
    assert!(wrong.error().contains("does not match"));
    let unknown_field = patch(r#"{"verified":true}"#).await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST, "{}", unknown_field.text);
    assert_eq!(app.get("/v1/push-subscriptions").await.json()[0]["verified"], false);

    // The code is the one this node queued for the PushVerification (it is replicated state, never shown).
    let code = app
        .state()
        .push()
        .get(&id)
        .and_then(|s| s.subscription.verification_code.clone())
        .expect("a JMAP subscription has a code");
    assert!(code.len() >= 22, "at least 128 bits, base64url: {code}");
    let body = format!(r#"{{"verification_code":"{code}","types":["Email"],"expires":"2099-01-01T00:00:00Z"}}"#);
    let verified = app.call(Method::PATCH, &path, Some(&body)).await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.text);
    let sub = verified.json();
    assert_eq!(sub["verified"], true);
    assert_eq!(sub["types"], serde_json::json!(["Email"]));
    assert_eq!(app.get("/v1/push-subscriptions").await.json()[0]["verified"], true);

    let missing = app.call(Method::PATCH, "/v1/push-subscriptions/nope", Some("{}")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // A webhook has nothing to verify.
    let hook = app
        .post(
            "/v1/push-subscriptions",
            r#"{"account_id":1,"url":"https://hooks.example.com/1"}"#,
        )
        .await;
    assert_eq!(hook.json()["verified"], false);
    assert_eq!(
        hook.json()["expires"],
        serde_json::Value::Null,
        "a webhook does not expire by default"
    );
    let hook_path = format!("/v1/push-subscriptions/{}", hook.json()["id"].as_str().expect("id"));
    let answer = app
        .call(Method::PATCH, &hook_path, Some(r#"{"verification_code":"x"}"#))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn events_cannot_carry_a_subscription_past_the_verification_gate() {
    let app = TestApp::new().await;
    let event = r#"{"type":"push_subscription_set","id":"forged","account_id":1,"url":"https://push.example.com/v",
        "types":[],"device_client_id":"d","verified":true,"verification_code":"c"}"#;
    let answer = app.post("/v1/events", event).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert!(
        answer.error().contains("POST /v1/push-subscriptions"),
        "{}",
        answer.text
    );
    let plain = r#"{"type":"push_subscription_set","id":"hook","account_id":1,"url":"https://push.example.com/h",
        "types":[]}"#;
    assert_eq!(app.post("/v1/events", plain).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn the_vapid_key_is_served_when_configured() {
    let app = TestApp::new().await;
    let none = app.get("/v1/push/vapid").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert!(none.error().contains("vapid-key-file"));

    let key = p256::SecretKey::from_slice(&[9u8; 32]).expect("scalar");
    let pem = key.to_sec1_pem(p256::pkcs8::LineEnding::LF).expect("pem");
    let dir = std::env::temp_dir().join(format!("agora-vapid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("vapid.pem");
    std::fs::write(&file, pem.as_bytes()).expect("write");
    let app = TestApp::with_config(&format!(
        "[push]\nvapid-key-file = {:?}\nvapid-subject = \"mailto:ops@example.com\"\n",
        file.display().to_string()
    ))
    .await;
    let answer = app.get("/v1/push/vapid").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let served = answer.json()["applicationServerKey"].as_str().expect("key").to_string();
    use base64::Engine as _;
    let point = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&served)
        .expect("base64url");
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    assert_eq!(point, key.public_key().to_encoded_point(false).as_bytes());
}
