//! `agora check-config`: validate a file and print the effective settings, secrets redacted.

use std::path::Path;

use crate::error::ConfigError;

/// Loads `path`, prints its notes and warnings, then the effective settings with secrets redacted.
pub fn run(path: &Path) -> Result<(), ConfigError> {
    let config = super::load_config(Some(path))?;
    for note in &config.notes {
        println!("# note: {note}");
    }
    for warning in config.security_warnings() {
        // On stdout as a comment (the output still parses back) and on stderr, where it is seen.
        println!("# warning: {warning}");
        eprintln!("warning: {warning}");
    }
    print!("{}", config.to_redacted_toml());
    Ok(())
}
