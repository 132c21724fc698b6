//! Typed readers of TOML values: each checks the type and range, applies `%{env:..}%` / `%{file:..}%`, and reports
//! a mistake with the full key, the value and what is allowed.

use std::time::Duration;

use toml::{Table, Value};

use super::keys::{closest, element, join, quote};
use super::parse::Walker;
use super::substitute::substitute;
use super::types::Secret;

impl Walker {
    /// A key that takes one value or a non-empty list of them (`address`, `cluster.key`): each item with its full
    /// key (`address[1]`), or `None` after reporting an empty list or another type. A wrong value is shown only if
    /// `show_value` (never for secrets); otherwise just its type.
    pub(super) fn one_or_list<'v>(
        &mut self,
        key: &str,
        value: &'v Value,
        empty_hint: &str,
        expected: &str,
        show_value: bool,
    ) -> Option<Vec<(String, &'v Value)>> {
        match value {
            Value::Array(items) if items.is_empty() => {
                self.error(key, format!("empty list: {empty_hint}"));
                None
            }
            Value::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (element(key, i), item))
                    .collect(),
            ),
            Value::Table(_) | Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {
                let found = if show_value {
                    describe(value)
                } else {
                    type_name(value).to_string()
                };
                self.error(key, format!("expected {expected}, found {found}"));
                None
            }
            Value::String(_) => Some(vec![(key.to_string(), value)]),
        }
    }

    /// Reports every key of `table` not in `allowed`, suggesting the closest allowed key.
    pub(super) fn check_keys(&mut self, path: &str, table: &Table, allowed: &[&str]) {
        for name in table.keys() {
            if allowed.contains(&name.as_str()) {
                continue;
            }
            let message = match closest(name, allowed) {
                Some(suggestion) => format!("unknown key; did you mean {suggestion}?"),
                None => format!("unknown key; allowed keys: {}", allowed.join(", ")),
            };
            self.error(&join(path, name), message);
        }
    }

    pub(super) fn table<'a>(&mut self, key: &str, value: &'a Value) -> Option<&'a Table> {
        match value {
            Value::Table(table) => Some(table),
            other => {
                self.error(
                    key,
                    format!(
                        "expected a table ([{key}] or {key}.<name> = ...), found {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    /// A string, after substitution.
    pub(super) fn string(&mut self, key: &str, value: &Value) -> Option<String> {
        match value {
            Value::String(raw) => match substitute(raw) {
                Ok(std::borrow::Cow::Owned(text)) => {
                    self.note_substituted(raw, &text);
                    Some(text)
                }
                Ok(text) => Some(text.into_owned()),
                Err(message) => {
                    self.error(key, message);
                    None
                }
            },
            other => {
                self.error(key, format!("expected a string, found {}", describe(other)));
                None
            }
        }
    }

    /// A secret string, after substitution; errors never show the value.
    pub(super) fn secret(&mut self, key: &str, value: &Value) -> Option<Secret> {
        match value {
            Value::String(raw) => match substitute(raw) {
                Ok(text) => Some(Secret::new(text.into_owned())),
                Err(message) => {
                    self.error(key, message);
                    None
                }
            },
            other => {
                self.error(key, format!("expected a string, found {}", type_name(other)));
                None
            }
        }
    }

    /// The text of a whole-value substitution standing for a non-string value (`node-id = "%{env:NODE_ID}%"`);
    /// `None` when `raw` is not a substitution or failed (reported).
    pub(super) fn substituted(&mut self, key: &str, raw: &str, expected: &str) -> Option<String> {
        match substitute(raw) {
            Ok(std::borrow::Cow::Owned(text)) => {
                self.note_substituted(raw, &text);
                Some(text)
            }
            Ok(std::borrow::Cow::Borrowed(_)) => {
                self.error(key, format!("expected {expected}, found string {}", quote(raw)));
                None
            }
            Err(message) => {
                self.error(key, message);
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, key: &str, value: &Value) -> Option<bool> {
        match value {
            Value::Boolean(b) => Some(*b),
            Value::String(raw) => {
                let text = self.substituted(key, raw, "a boolean (true or false)")?;
                match text.trim() {
                    "true" => Some(true),
                    "false" => Some(false),
                    other => {
                        self.error(
                            key,
                            format!("expected a boolean (true or false), {raw} gave {}", quote(other)),
                        );
                        None
                    }
                }
            }
            other => {
                self.error(
                    key,
                    format!("expected a boolean (true or false), found {}", describe(other)),
                );
                None
            }
        }
    }

    pub(super) fn integer(&mut self, key: &str, value: &Value) -> Option<i64> {
        match value {
            Value::Integer(i) => Some(*i),
            Value::String(raw) => {
                let text = self.substituted(key, raw, "an integer")?;
                match text.trim().parse::<i64>() {
                    Ok(i) => Some(i),
                    Err(_) => {
                        self.error(key, format!("expected an integer, {raw} gave {}", quote(&text)));
                        None
                    }
                }
            }
            other => {
                self.error(key, format!("expected an integer, found {}", describe(other)));
                None
            }
        }
    }

    pub(super) fn integer_in(&mut self, key: &str, value: &Value, min: i64, max: i64) -> Option<i64> {
        let n = self.integer(key, value)?;
        if n < min {
            self.error(
                key,
                format!("must be at least {min}, found {n} (allowed {min}..={max})"),
            );
            None
        } else if n > max {
            self.error(key, format!("must be at most {max}, found {n} (allowed {min}..={max})"));
            None
        } else {
            Some(n)
        }
    }

    pub(super) fn positive_duration(&mut self, key: &str, value: &Value, example: &str) -> Option<Duration> {
        self.duration(key, value, example, Duration::from_nanos(1), None)
    }

    /// A duration string such as `250ms`, `5s`, `2m`, `1h`, `1d`, within `min..=max`.
    pub(super) fn duration(
        &mut self,
        key: &str,
        value: &Value,
        example: &str,
        min: Duration,
        max: Option<Duration>,
    ) -> Option<Duration> {
        let text = match value {
            Value::String(_) => self.string(key, value)?,
            Value::Integer(i) => {
                self.error(
                    key,
                    format!(
                        "expected a duration such as \"{example}\" (a string with a unit: ms, s, m, h, d), found integer {i}"
                    ),
                );
                return None;
            }
            other => {
                self.error(
                    key,
                    format!("expected a duration such as \"{example}\", found {}", describe(other)),
                );
                return None;
            }
        };
        let duration = match humantime::parse_duration(text.trim()) {
            Ok(duration) => duration,
            Err(error) => {
                self.error(
                    key,
                    format!(
                        "expected a duration such as \"{example}\" (units: ms, s, m, h, d), found {} ({error})",
                        quote(&text)
                    ),
                );
                return None;
            }
        };
        let range = match max {
            Some(max) => format!(
                "allowed {}..={}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
            None => "allowed: more than zero".to_string(),
        };
        if duration.is_zero() && !min.is_zero() {
            self.error(
                key,
                format!("must be greater than zero, found {} ({range})", quote(&text)),
            );
            None
        } else if duration < min {
            self.error(
                key,
                format!(
                    "must be at least {}, found {} ({range})",
                    humantime::format_duration(min),
                    quote(&text)
                ),
            );
            None
        } else if max.is_some_and(|max| duration > max) {
            self.error(key, format!("too long: found {} ({range})", quote(&text)));
            None
        } else {
            Some(duration)
        }
    }
}

/// The TOML type of a value, with an article.
pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// A value's type and, for scalars, the value itself (never used for secrets).
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("string {}", quote(s)),
        Value::Integer(i) => format!("integer {i}"),
        Value::Float(f) => format!("float {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("datetime {d}"),
        Value::Array(_) | Value::Table(_) => type_name(value).to_string(),
    }
}
