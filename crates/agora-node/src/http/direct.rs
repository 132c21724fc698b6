//! The direct transport of plain-HTTP EventSource connections (`GET /v1/eventsource`, told apart by the accept
//! loop's peek): the request head is read and parsed here, within the header timeout and the same size bounds as
//! every request, and goes through the whole router (token, CORS, limits, the handler). A stream the handler
//! accepts is answered with its headers and handed to the fan-out (`http::fanout`); any other answer (an error,
//! `closeafter=state`, which the handler serves as a body) is written in full and the connection closed. One
//! request per connection: an EventSource holds its connection for the stream.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tower::ServiceExt;

use super::edge::{MAX_HEADER_BYTES, MAX_URI_BYTES};
use super::error::ApiError;
use super::fanout::socket::{self, MAX_CLIENT_BYTES};
use super::fanout::{DirectConnection, DirectJoin};

/// Largest request head read: the request line and headers at their bounds, plus the separators.
const MAX_HEAD_BYTES: usize = MAX_URI_BYTES + MAX_HEADER_BYTES + 4096;

/// Most header lines in one request (hyper's default is 100 too).
const MAX_HEADERS: usize = 100;

/// Most bytes of a non-stream answer written (errors are short JSON).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why a request head was not read.
enum HeadError {
    /// Closed, failed or timed out: nothing to answer.
    Gone,
    /// Answer this error and close.
    Refuse(StatusCode, String),
}

/// Serves one EventSource connection (see the module documentation). `connection` is the connection's place under
/// `[http] max-connections`: the fan-out keeps it for as long as the stream lasts.
pub async fn serve(mut socket: TcpStream, router: Router, header_timeout: Duration, connection: OwnedSemaphorePermit) {
    let request = match tokio::time::timeout(header_timeout, read_head(&socket)).await {
        Ok(Ok(request)) => request,
        Ok(Err(HeadError::Refuse(status, message))) => {
            return answer(socket, ApiError::new(status, message).into_response()).await
        }
        Ok(Err(HeadError::Gone)) | Err(_) => return,
    };
    let Ok(response) = router.oneshot(request).await;
    let join = response.extensions().get::<DirectJoin>().and_then(DirectJoin::take);
    let Some(join) = join else {
        return answer(socket, response).await;
    };
    let head = response_head(&response, None);
    if socket.write_all(&head).await.is_err() {
        return;
    }
    join.hub.clone().attach(socket, join, connection);
}

/// Reads and parses the request head. A GET stream request has nothing after its head; anything a client sends
/// after it is never read as a request.
async fn read_head(socket: &TcpStream) -> Result<Request<Body>, HeadError> {
    let mut buffer = Vec::with_capacity(2048);
    loop {
        let mut chunk = [0u8; 4096];
        socket.readable().await.map_err(|_| HeadError::Gone)?;
        let n = match socket.try_read(&mut chunk[..(MAX_HEAD_BYTES - buffer.len()).min(4096)]) {
            Ok(0) => return Err(HeadError::Gone),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return Err(HeadError::Gone),
        };
        buffer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buffer) {
            Ok(httparse::Status::Complete(_)) => return to_request(&parsed),
            Ok(httparse::Status::Partial) if buffer.len() >= MAX_HEAD_BYTES => {
                return Err(HeadError::Refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!("the request head is larger than {MAX_HEAD_BYTES} bytes"),
                ))
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HeadError::Refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!("more than {MAX_HEADERS} header lines"),
                ))
            }
            Err(e) => {
                return Err(HeadError::Refuse(
                    StatusCode::BAD_REQUEST,
                    format!("malformed request: {e}"),
                ))
            }
        }
    }
}

/// The parsed head as a request for the router, marked as the direct transport's.
fn to_request(parsed: &httparse::Request<'_, '_>) -> Result<Request<Body>, HeadError> {
    let malformed = || HeadError::Refuse(StatusCode::BAD_REQUEST, "malformed request line or header".into());
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes()).map_err(|_| malformed())?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut request = Request::builder()
        .method(method)
        .uri(parsed.path.unwrap_or("/"))
        .version(version)
        .body(Body::empty())
        .map_err(|_| malformed())?;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| malformed())?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| malformed())?;
        request.headers_mut().append(name, value);
    }
    // A stream request has no body; one that announces a body would leave bytes this transport does not read.
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(HeadError::Refuse(
            StatusCode::BAD_REQUEST,
            "a stream request has no body".into(),
        ));
    }
    request.extensions_mut().insert(DirectConnection);
    Ok(request)
}

/// The status line and headers of `response`, for a connection that closes after it; with `Content-Length` when
/// the body is known.
fn response_head(response: &Response, content_length: Option<usize>) -> Vec<u8> {
    let status = response.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in response.headers() {
        if *name == header::CONTENT_LENGTH || *name == header::TRANSFER_ENCODING || *name == header::CONNECTION {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(length) = content_length {
        head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// Writes a whole response and closes the connection. A body (the hyper-style stream of `closeafter=state`) is
/// written as it comes, until it ends; errors are short.
async fn answer(mut socket: TcpStream, response: Response) {
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_stream {
        let head = response_head(&response, None);
        if socket.write_all(&head).await.is_err() {
            return;
        }
        // Until the body ends (one state), or the client leaves: nothing else would notice that, and the stream
        // would hold its places until its account changes.
        let mut body = response.into_body().into_data_stream();
        let mut received = 0usize;
        loop {
            tokio::select! {
                chunk = body.next() => match chunk {
                    Some(Ok(chunk)) => {
                        if socket::write_all(&socket, &chunk).await.is_err() {
                            return;
                        }
                    }
                    _ => break,
                },
                ready = socket.readable() => match ready.and_then(|()| socket::discard_input(&socket)) {
                    Ok(n) => {
                        received += n;
                        if received > MAX_CLIENT_BYTES {
                            return;
                        }
                    }
                    Err(_) => return,
                },
            }
        }
    } else {
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, MAX_ANSWER_BYTES).await.unwrap_or_default();
        let response = Response::from_parts(parts, Body::empty());
        let mut bytes = response_head(&response, Some(body.len()));
        bytes.extend_from_slice(&body);
        if socket.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = socket.shutdown().await;
}
