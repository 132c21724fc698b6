//! The benchmarks' raw HTTP client pieces: opening an SSE stream over a plain TCP connection and reading its body
//! (HTTP/1.1 chunked transfer coding or not).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Response headers longer than this are refused.
const MAX_HEADERS: usize = 16 * 1024;

/// An open SSE stream: the connection and what was read past the response headers.
pub struct OpenStream {
    /// The connection, positioned after the bytes in `body_start`.
    pub stream: TcpStream,
    /// Body bytes that arrived with the headers.
    pub body_start: Vec<u8>,
    /// Whether the body uses the chunked transfer coding.
    pub chunked: bool,
}

/// `GET path` on a new connection to `addr`; returns once the node answered 200 (the stream is live from then on).
pub async fn open_stream(addr: &str, path: &str) -> Result<OpenStream, String> {
    open_stream_with(addr, path, "").await
}

/// [`open_stream`] with extra request header lines (each ending in `\r\n`), e.g. `Last-Event-ID`.
pub async fn open_stream_with(addr: &str, path: &str, headers: &str) -> Result<OpenStream, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{headers}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEADERS {
            return Err(format!("GET {path}: response headers too long"));
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("GET {path}: connection closed before the response headers"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("GET {path} answered {status}"));
    }
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    Ok(OpenStream {
        stream,
        body_start: buf[end..].to_vec(),
        chunked,
    })
}

/// Decodes the HTTP/1.1 chunked transfer coding incrementally.
#[derive(Debug, Default)]
pub struct Dechunker {
    pending: Vec<u8>,
    /// Payload bytes still to come in the current chunk.
    remaining: usize,
    /// The CRLF after a chunk's payload is still to come.
    crlf: bool,
    /// The last (empty) chunk was seen.
    pub ended: bool,
}

impl Dechunker {
    /// Feeds `input`; appends the payload bytes it completes to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        let mut pos = 0;
        while !self.ended {
            if self.remaining > 0 {
                let n = self.remaining.min(self.pending.len() - pos);
                out.extend_from_slice(&self.pending[pos..pos + n]);
                pos += n;
                self.remaining -= n;
                if self.remaining > 0 {
                    break;
                }
                self.crlf = true;
            }
            if self.crlf {
                if self.pending.len() - pos < 2 {
                    break;
                }
                pos += 2;
                self.crlf = false;
            }
            let Some(i) = self.pending[pos..].windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let line = String::from_utf8_lossy(&self.pending[pos..pos + i]);
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).unwrap_or(0);
            pos += i + 2;
            if size == 0 {
                self.ended = true;
            }
            self.remaining = size;
        }
        self.pending.drain(..pos);
    }
}

/// Reads an open stream's body until it ends (its last chunk, or the connection closes: `true`) or `cancelled`
/// resolves (`false`), handing the body text to `take` after each read; `take` removes what it consumed.
pub async fn read_body(
    open: OpenStream,
    mut cancelled: std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
    mut take: impl FnMut(&mut Vec<u8>),
) -> bool {
    let OpenStream {
        mut stream,
        body_start,
        chunked,
    } = open;
    let mut dechunker = Dechunker::default();
    let mut text = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut feed = |input: &[u8]| {
        if chunked {
            dechunker.feed(input, &mut text);
        } else {
            text.extend_from_slice(input);
        }
        take(&mut text);
        dechunker.ended
    };
    if feed(&body_start) {
        return true;
    }
    loop {
        let n = tokio::select! {
            biased;
            n = stream.read(&mut buf) => n,
            () = &mut cancelled => return false,
        };
        match n {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                if feed(&buf[..n]) {
                    return true;
                }
            }
        }
    }
}

/// Runs `work` on a one-thread runtime of its own, on this thread: thousands of client sockets read by two worker
/// threads that keep waking each other cost the machine (whose 2 cores the node shares) more than the node's work.
pub fn on_own_runtime<T>(work: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the clients' runtime: {e}"))?
        .block_on(work)
}

#[cfg(test)]
mod tests {
    use super::Dechunker;

    #[test]
    fn dechunks_input_split_anywhere() {
        let wire = b"5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            d.feed(&wire[..split], &mut out);
            d.feed(&wire[split..], &mut out);
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz", "split at {split}");
            assert!(d.ended);
        }
    }
}
