//! Stalwart's whole-value substitutions: `%{env:NAME}%` and `%{file:/path}%`.

use std::borrow::Cow;

/// Expands `raw` if it is exactly `%{env:NAME}%` or `%{file:/path}%`; otherwise returns it unchanged.
///
/// File contents are trimmed of surrounding whitespace (the trailing newline of a secret file). Errors name the
/// variable or the path, never a value. A substitution that is only part of the value is an error rather than a
/// literal, so that a typo never ends up used as, say, a password.
pub(crate) fn substitute(raw: &str) -> Result<Cow<'_, str>, String> {
    let Some(inner) = raw.strip_prefix("%{").and_then(|rest| rest.strip_suffix("}%")) else {
        if raw.contains("%{env:") || raw.contains("%{file:") {
            return Err("a %{env:NAME}% or %{file:/path}% substitution must be the whole value".to_string());
        }
        return Ok(Cow::Borrowed(raw));
    };
    match inner.split_once(':') {
        Some(("env", name)) => {
            if name.is_empty() {
                return Err("%{env:}% names no environment variable".to_string());
            }
            match std::env::var(name) {
                Ok(value) => Ok(Cow::Owned(value)),
                Err(std::env::VarError::NotPresent) => Err(format!(
                    "environment variable `{name}` (from %{{env:{name}}}%) is not set"
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(format!(
                    "environment variable `{name}` (from %{{env:{name}}}%) is not valid UTF-8"
                )),
            }
        }
        Some(("file", path)) => {
            if path.is_empty() {
                return Err("%{file:}% names no file".to_string());
            }
            read_bounded(path)
                .map(|contents| Cow::Owned(contents.trim().to_string()))
                .map_err(|error| format!("cannot read file `{path}` (from %{{file:{path}}}%): {error}"))
        }
        Some((kind, _)) if !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric()) => Err(format!(
            "unknown substitution `%{{{kind}:...}}%`: expected %{{env:NAME}}% or %{{file:/path}}%"
        )),
        _ => Err("malformed substitution: expected %{env:NAME}% or %{file:/path}%".to_string()),
    }
}

/// Largest file a `%{file:}%` substitution reads: secrets and `.creds` files are small, and a mistyped path (a log,
/// a device) must not be read whole into memory.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads a substituted file, at most [`MAX_FILE_BYTES`]; the error never quotes the contents.
fn read_bounded(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut contents = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut contents)?;
    if contents.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes, the most a substitution reads"
        )));
    }
    String::from_utf8(contents).map_err(|_| std::io::Error::other("not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_pass_through() {
        assert_eq!(substitute("nats1:4222").as_deref(), Ok("nats1:4222"));
        assert_eq!(substitute("").as_deref(), Ok(""));
        assert_eq!(substitute("50%{").as_deref(), Ok("50%{"));
    }

    #[test]
    fn missing_variable_is_named() {
        let error = substitute("%{env:AGORA_SUBST_UNIT_MISSING_1}%").unwrap_err();
        assert!(error.contains("AGORA_SUBST_UNIT_MISSING_1"), "{error}");
    }

    #[test]
    fn partial_and_unknown_substitutions_are_errors() {
        assert!(substitute("x%{env:HOME}%").is_err());
        let error = substitute("%{ENV:HOME}%").unwrap_err();
        assert!(error.contains("unknown substitution"), "{error}");
        assert!(substitute("%{nothing}%").is_err());
    }

    #[test]
    fn unreadable_file_is_named() {
        let error = substitute("%{file:/nonexistent/agora/secret}%").unwrap_err();
        assert!(error.contains("/nonexistent/agora/secret"), "{error}");
    }

    #[test]
    fn files_are_read_up_to_a_bound_and_never_quoted() {
        let path = std::env::temp_dir().join(format!("agora-subst-big-{}", std::process::id()));
        std::fs::write(&path, "s3cr3t".repeat((MAX_FILE_BYTES as usize) / 6 + 1)).expect("write");
        let raw = format!("%{{file:{}}}%", path.display());
        let error = substitute(&raw).expect_err("too large");
        assert!(error.contains("larger than") && !error.contains("s3cr3t"), "{error}");
        std::fs::write(&path, [0xff, 0xfe, b's']).expect("write");
        let error = substitute(&raw).expect_err("not UTF-8");
        assert!(error.contains("UTF-8"), "{error}");
        let _ = std::fs::remove_file(&path);
    }
}
