//! Lists streamed page by page: a JSON array written as the client reads it, one page of items in memory at a time,
//! so that a long list (100,000 blocked-IP rules) read by many slow clients costs a page per client, not a copy of
//! the list per client.

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

/// Items per page: large enough that a page's lock and JSON cost little per item, small enough to stay a few
/// hundred KiB.
pub const PAGE_ITEMS: usize = 1000;

/// Where a streamed list is.
enum Position<C> {
    /// Nothing written yet.
    Start,
    /// Items written; the next page starts after this cursor.
    After(C),
    /// The closing bracket is written.
    Done,
}

/// A `200` JSON array of every item `page` yields: `page(after)` returns one page of items and the cursor after
/// it, `None` when the list is done.
pub fn json_array<T, C, F>(page: F) -> Response
where
    T: Serialize,
    C: Send + 'static,
    F: Fn(Option<&C>) -> (Vec<T>, Option<C>) + Send + Sync + 'static,
{
    let chunks = futures::stream::unfold((Position::Start, false), move |(position, mut any)| {
        let chunk = match position {
            Position::Done => None,
            Position::Start | Position::After(_) => {
                let after = match &position {
                    Position::After(cursor) => Some(cursor),
                    _ => None,
                };
                let (items, next) = page(after);
                let mut text = String::new();
                if matches!(position, Position::Start) {
                    text.push('[');
                }
                for item in &items {
                    // The API's views are plain structs with string keys: they always serialise.
                    let Ok(json) = serde_json::to_string(item) else {
                        continue;
                    };
                    if any {
                        text.push(',');
                    }
                    any = true;
                    text.push_str(&json);
                }
                let position = match next {
                    Some(cursor) => Position::After(cursor),
                    None => {
                        text.push(']');
                        Position::Done
                    }
                };
                Some((Ok::<_, std::convert::Infallible>(Bytes::from(text)), (position, any)))
            }
        };
        std::future::ready(chunk)
    });
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        Body::from_stream(chunks),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    async fn body_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("a JSON document")
    }

    /// Pages of `per_page` numbers from 0 to `n`, where multiples of 7 are filtered out (pages may come back empty).
    fn numbers(n: u32, per_page: u32) -> impl Fn(Option<&u32>) -> (Vec<Value>, Option<u32>) {
        move |after| {
            let start = after.map_or(0, |a| a + 1);
            let end = (start + per_page).min(n);
            let items = (start..end).filter(|i| i % 7 != 0).map(Value::from).collect();
            (items, (end < n).then(|| end - 1))
        }
    }

    #[tokio::test]
    async fn pages_join_into_one_valid_array() {
        let all = body_of(json_array(numbers(2_500, 100))).await;
        let expected: Vec<Value> = (0..2_500u32).filter(|i| i % 7 != 0).map(Value::from).collect();
        assert_eq!(all, Value::Array(expected));
        // Pages that filter out everything still join with the right commas.
        let sparse = body_of(json_array(numbers(30, 1))).await;
        assert_eq!(sparse.as_array().map(Vec::len), Some(30 - 5), "{sparse}");
        assert_eq!(body_of(json_array(numbers(0, 10))).await, serde_json::json!([]));
    }
}
