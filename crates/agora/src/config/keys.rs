//! Spelling full keys the way they are written in TOML: `store."nats".timeout.connection`.

/// `s` as a TOML basic string, quotes included.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One key segment: bare if TOML allows it, quoted otherwise.
pub(crate) fn segment(name: &str) -> String {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        name.to_string()
    } else {
        quote(name)
    }
}

/// `parent.name`.
pub(crate) fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        segment(name)
    } else {
        format!("{parent}.{}", segment(name))
    }
}

/// `store."<id>"`: store ids are always quoted, as Stalwart writes them.
pub(crate) fn store_key(id: &str) -> String {
    format!("store.{}", quote(id))
}

/// `key[index]`, for list elements.
pub(crate) fn element(key: &str, index: usize) -> String {
    format!("{key}[{index}]")
}

/// The allowed key closest to `unknown`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(unknown: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let unknown_lower = unknown.to_ascii_lowercase().replace('_', "-");
    allowed
        .iter()
        .map(|candidate| {
            (
                strsim::damerau_levenshtein(&unknown_lower, candidate),
                strsim::normalized_damerau_levenshtein(&unknown_lower, candidate),
                *candidate,
            )
        })
        .filter(|(distance, similarity, _)| *distance <= 1 || *similarity >= 0.7)
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, _, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spelled_as_in_toml() {
        assert_eq!(
            join(&store_key("nats"), "ping-interval"),
            "store.\"nats\".ping-interval"
        );
        assert_eq!(join("", "cluster"), "cluster");
        assert_eq!(join("x", "a b"), "x.\"a b\"");
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }

    #[test]
    fn typos_are_matched() {
        let allowed = ["ping-interval", "no-echo", "address", "user", "password"];
        assert_eq!(closest("ping-intervall", &allowed), Some("ping-interval"));
        assert_eq!(closest("ping_interval", &allowed), Some("ping-interval"));
        assert_eq!(closest("adress", &allowed), Some("address"));
        assert_eq!(closest("zzz", &allowed), None);
        assert_eq!(closest("clustr", &["cluster", "store", "http"]), Some("cluster"));
    }
}
