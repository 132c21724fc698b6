//! A minimal blocking HTTP/1.1 client for tests of the node's API (one request per connection).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response: status code and body text.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Response {
    /// The body as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request with a JSON content type and reads the whole response.
pub fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Response> {
    request_with_headers(addr, method, path, &[("Content-Type", "application/json")], body)
}

/// Sends one request with exactly these extra headers (e.g. another `Content-Type`, or none, or `Authorization`)
/// and reads the whole response.
pub fn request_with_headers(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let headers = header_lines(headers);
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(Response { status, body })
}

/// One request as a test endpoint received it.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// The method.
    pub method: String,
    /// The request target.
    pub target: String,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 request with its method and headers (`Content-Length` framing). `None` once the connection
/// closes or breaks.
pub fn read_full_request(reader: &mut impl BufRead) -> Option<ReceivedRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(ReceivedRequest {
        method,
        target,
        headers,
        body,
    })
}

/// Reads one HTTP/1.1 request from a client (the server side of a test endpoint, e.g. a push webhook): its request
/// target and its body (`Content-Length` framing). `None` once the connection closes or breaks.
pub fn read_request(reader: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    read_full_request(reader).map(|r| (r.target, r.body))
}

/// `Name: value\r\n` lines for a request head.
fn header_lines(headers: &[(&str, &str)]) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect()
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// An open Server-Sent Events stream.
pub struct SseStream {
    reader: BufReader<TcpStream>,
}

/// One SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field, if the event has one.
    pub id: Option<String>,
    /// The `event:` field.
    pub event: String,
    /// The `data:` field.
    pub data: String,
}

impl SseStream {
    /// Opens `GET path` and checks the response is a 200 event stream.
    pub fn open(addr: &str, path: &str) -> std::io::Result<Self> {
        Self::open_with_headers(addr, path, &[])
    }

    /// Opens `GET path` with extra headers (e.g. `Last-Event-ID`, `Authorization`).
    pub fn open_with_headers(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Self> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let headers = header_lines(headers);
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{headers}\r\n"
        )?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if !line.contains(" 200 ") {
            return Err(std::io::Error::other(format!("SSE request failed: {line}")));
        }
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Ok(SseStream { reader })
    }

    /// The next event (comments and keep-alives skipped); an error after the read timeout.
    pub fn next_event(&mut self) -> std::io::Result<SseEvent> {
        let mut id = None;
        let mut event = String::new();
        let mut data = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("SSE stream closed"));
            }
            // Chunked framing lines (hex sizes) interleave with the SSE text; SSE lines always contain ':'.
            let l = line.trim_end_matches(['\r', '\n']);
            if let Some(v) = l.strip_prefix("id:") {
                id = Some(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if l.is_empty() && !data.is_empty() {
                return Ok(SseEvent { id, event, data });
            }
        }
    }
}
