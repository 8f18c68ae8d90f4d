//! Checks on configuration text (TOML) before the `config` crate reads it.
//!
//! The `config` crate reads a key such as `'c[-9223372036854775808]'` or `'c[99999999999]'`
//! as a path into an array and grows the array to that index: a capacity-overflow panic or
//! an allocation of the whole memory, from one line of a configuration file (found by the
//! fuzz target `config_cabinet`). No key of ours has brackets, so a key with `[` or `]`
//! is refused here, by name, before the `config` crate sees it.

/// Finds the first key (at any depth) that holds `[` or `]`; its dotted path is the error.
/// Text that is not TOML passes: the `config` crate reports that with its own error.
pub fn bracketed_key(text: &str) -> Option<String> {
    let table: toml::Table = text.parse().ok()?;
    first_bad(&table, "")
}

fn first_bad(table: &toml::Table, prefix: &str) -> Option<String> {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if key.contains(['[', ']']) {
            return Some(path);
        }
        let nested = match value {
            toml::Value::Table(t) => first_bad(t, &path),
            toml::Value::Array(items) => items.iter().find_map(|v| match v {
                toml::Value::Table(t) => first_bad(t, &path),
                _ => None,
            }),
            _ => None,
        };
        if nested.is_some() {
            return nested;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_brackets_are_found_at_any_depth() {
        assert_eq!(bracketed_key("'c[-9223372036854775808]' = ''\n"), Some("c[-9223372036854775808]".into()));
        assert_eq!(bracketed_key("[mqtt]\n\"a]\" = 1\n"), Some("mqtt.a]".into()));
        assert_eq!(bracketed_key("[[compartments]]\nid = \"A1\"\n'x[1]' = 2\n"), Some("compartments.x[1]".into()));
        assert_eq!(bracketed_key("cabinet = \"c[1]\"\n[[compartments]]\nid = \"A1\"\n"), None, "values may hold them");
        assert_eq!(bracketed_key("not toml ["), None);
    }
}
