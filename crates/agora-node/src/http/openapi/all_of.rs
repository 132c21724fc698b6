//! Writes every `allOf` of object schemas as the one object (or the `oneOf` of objects) it stands for.
//!
//! utoipa writes serde's `#[serde(flatten)]` and the internally tagged newtype variants (`{"type": ..., ...the
//! inner struct's fields}`) as `allOf` of the parts. With `deny_unknown_fields` (`additionalProperties: false`) on
//! a part, that `allOf` would accept nothing: each part forbids the other's fields. Merged, the object has exactly
//! the fields serde reads and writes. A part that is a `oneOf` (an enum) distributes: one object per alternative.

use serde_json::{Map, Value};

/// Rewrites every mergeable `allOf` in `document`, components and paths alike.
pub fn flatten(document: &mut Value) {
    let components = document
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    walk(document, &components);
}

/// Rewrites `value` and everything under it, innermost first.
fn walk(value: &mut Value, components: &Map<String, Value>) {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                walk(child, components);
            }
            if let Some(merged) = map.get("allOf").and_then(|parts| merge(parts, components)) {
                map.remove("allOf");
                for (key, value) in merged {
                    map.entry(key).or_insert(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| walk(item, components)),
        _ => {}
    }
}

/// The merged schema of an `allOf`'s parts, or `None` when a part is not an object or a `oneOf` of objects.
fn merge(parts: &Value, components: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut combined: Vec<Map<String, Value>> = vec![Map::new()];
    for part in parts.as_array()? {
        let alternatives = objects(part, components, 0)?;
        combined = combined
            .iter()
            .flat_map(|done| alternatives.iter().map(move |next| join(done, next)))
            .collect();
    }
    match combined.len() {
        1 => combined.pop(),
        _ => {
            let mut one_of = Map::new();
            one_of.insert(
                "oneOf".into(),
                Value::Array(combined.into_iter().map(Value::Object).collect()),
            );
            Some(one_of)
        }
    }
}

/// The object schemas `schema` stands for: itself, the target of its `$ref`, or the alternatives of its `oneOf`.
fn objects(schema: &Value, components: &Map<String, Value>, depth: usize) -> Option<Vec<Map<String, Value>>> {
    if depth > 8 {
        return None;
    }
    let map = schema.as_object()?;
    if let Some(target) = map.get("$ref").and_then(Value::as_str) {
        let name = target.strip_prefix("#/components/schemas/")?;
        let mut resolved = components.get(name)?.clone();
        walk(&mut resolved, components);
        return objects(&resolved, components, depth + 1);
    }
    if let Some(alternatives) = map.get("oneOf").and_then(Value::as_array) {
        let mut all = Vec::new();
        for alternative in alternatives {
            all.extend(objects(alternative, components, depth + 1)?);
        }
        return Some(all);
    }
    let is_object = map.get("type").and_then(Value::as_str) == Some("object") || map.contains_key("properties");
    is_object.then(|| vec![map.clone()])
}

/// Two object schemas as one: the union of their properties and required fields; closed (no other fields) when
/// either is; the first one's description.
fn join(a: &Map<String, Value>, b: &Map<String, Value>) -> Map<String, Value> {
    let mut out = a.clone();
    out.insert("type".into(), Value::from("object"));
    let properties = out.entry("properties").or_insert_with(|| Value::Object(Map::new()));
    if let (Some(into), Some(from)) = (
        properties.as_object_mut(),
        b.get("properties").and_then(Value::as_object),
    ) {
        for (name, schema) in from {
            into.entry(name.clone()).or_insert_with(|| schema.clone());
        }
    }
    let mut required: Vec<Value> = out
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for name in b.get("required").and_then(Value::as_array).into_iter().flatten() {
        if !required.contains(name) {
            required.push(name.clone());
        }
    }
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    let closed = |m: &Map<String, Value>| m.get("additionalProperties") == Some(&Value::Bool(false));
    if closed(a) || closed(b) {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    for key in ["description", "title"] {
        if let (None, Some(value)) = (out.get(key), b.get(key)) {
            out.insert(key.into(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tagged_newtype_over_a_closed_enum_becomes_one_closed_object_per_alternative() {
        let mut document = json!({
            "components": {"schemas": {
                "Inner": {"oneOf": [
                    {"type": "object", "properties": {"kind": {"enum": ["A"]}, "x": {"type": "integer"}},
                     "required": ["kind", "x"], "additionalProperties": false},
                    {"type": "object", "properties": {"kind": {"enum": ["B"]}}, "required": ["kind"],
                     "additionalProperties": false},
                ]},
                "Outer": {"allOf": [
                    {"$ref": "#/components/schemas/Inner"},
                    {"type": "object", "properties": {"type": {"enum": ["inner"]}}, "required": ["type"]},
                ]},
            }},
        });
        flatten(&mut document);
        let outer = &document["components"]["schemas"]["Outer"];
        assert!(outer.get("allOf").is_none(), "{outer}");
        let alternatives = outer["oneOf"].as_array().expect("one per kind");
        assert_eq!(alternatives.len(), 2);
        assert_eq!(alternatives[0]["required"], json!(["kind", "x", "type"]));
        assert_eq!(alternatives[1]["additionalProperties"], json!(false));
        assert!(alternatives[1]["properties"].get("type").is_some());
    }

    #[test]
    fn an_all_of_with_a_part_that_is_not_an_object_is_left_alone() {
        let mut document = json!({"allOf": [{"type": "string"}, {"type": "object", "properties": {}}]});
        let before = document.clone();
        flatten(&mut document);
        assert_eq!(document, before);
    }
}
