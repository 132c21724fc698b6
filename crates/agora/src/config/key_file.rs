//! Reading the PEM key files the configuration names (`[push] vapid-key-file`, `[http.clients] public-key-files`):
//! bounded, and with errors that say what is wrong without ever quoting the file.

use std::io::Read;

/// A key file is a few hundred bytes; more is not a key (and is not read).
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

/// The text of the key file at `path`; the error completes "`<key>` <path> ...".
pub(super) fn read_pem(path: &str) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be read ({e})"))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!("is larger than {MAX_KEY_FILE_BYTES} bytes: not a key file"));
    }
    String::from_utf8(bytes).map_err(|_| "is not a PEM file (not text)".to_string())
}
