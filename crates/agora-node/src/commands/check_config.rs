//! `agora check-config`: validate a file and print the effective settings, secrets redacted.

use std::path::Path;

use crate::Failure;

pub fn run(path: &Path) -> Result<(), Failure> {
    let config = super::load_config(Some(path))?;
    for note in &config.notes {
        println!("# note: {note}");
    }
    print!("{}", config.to_redacted_toml());
    Ok(())
}
