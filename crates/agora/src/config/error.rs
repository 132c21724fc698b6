//! Configuration errors: each names the full key (`store."nats".capacity.read-buffer`) and says what is wrong.

use std::fmt;

/// One problem found in the configuration: the full key it concerns and what is wrong with it.
///
/// The message shows the bad value and what is allowed, except for secrets, which are never printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    key: String,
    message: String,
}

impl ConfigError {
    /// An error about `key` (a full key such as `cluster.node-id`, or the file for read errors).
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The full key, e.g. `store."nats".timeout.connection`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong, without the key.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration (never just the first one), in the order they were found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// Wraps the errors found; callers only build this with at least one error.
    pub fn new(errors: Vec<ConfigError>) -> Self {
        ConfigErrors(errors)
    }

    /// The errors, in the order they were found.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// The errors, by value.
    pub fn into_errors(self) -> Vec<ConfigError> {
        self.0
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
