//! A stream's socket used through a shared reference, so that one task can write it while another watches it for
//! the client leaving (the fan-out's streams, and the direct transport's `closeafter=state` answers).

use std::io;

use tokio::net::TcpStream;

/// Bytes a stream's client may send after its request (nothing is expected) before it is disconnected.
pub const MAX_CLIENT_BYTES: usize = 4096;

/// Writes `bytes` whole, waiting for the client to read.
pub async fn write_all(socket: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads and drops what the client sent (once the socket is readable): how many bytes, or `Err` when the client
/// closed its side or the connection failed.
pub fn discard_input(socket: &TcpStream) -> io::Result<usize> {
    let mut buffer = [0u8; 512];
    match socket.try_read(&mut buffer) {
        Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}
