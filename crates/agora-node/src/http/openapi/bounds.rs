//! The bounds of Rust's integer types in the document: utoipa names their formats (`u-int32`, `int16`...), which
//! JSON Schema validators and generators do not know; `minimum` and `maximum` say the same to all of them, so a
//! value the node refuses as out of range is invalid in the document too. The unsigned formats are written the
//! usual way (`uint32`).

use serde_json::Value;

/// The usual name and the bounds of an integer format, if it is one of Rust's.
fn bounds(format: &str) -> Option<(&'static str, i64, u64)> {
    Some(match format {
        "int8" => ("int8", i8::MIN.into(), 127),
        "int16" => ("int16", i16::MIN.into(), 32_767),
        "int32" => ("int32", i32::MIN.into(), 2_147_483_647),
        "int64" => ("int64", i64::MIN, i64::MAX as u64),
        "uint8" | "u-int8" => ("uint8", 0, u8::MAX.into()),
        "uint16" | "u-int16" => ("uint16", 0, u16::MAX.into()),
        "uint32" | "u-int32" => ("uint32", 0, u32::MAX.into()),
        "uint64" | "u-int64" => ("uint64", 0, u64::MAX),
        _ => return None,
    })
}

/// Adds `minimum` and `maximum` to every integer schema with a Rust format (keeping any bound set explicitly).
pub fn add(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let format = map.get("format").and_then(Value::as_str).and_then(bounds);
            if let Some((name, min, max)) = format {
                map.insert("format".into(), Value::from(name));
                map.entry("minimum").or_insert(Value::from(min));
                map.entry("maximum").or_insert(Value::from(max));
            }
            map.values_mut().for_each(add);
        }
        Value::Array(items) => items.iter_mut().for_each(add),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unsigned_formats_get_their_full_range_and_explicit_bounds_stay() {
        let mut schema = json!({"properties": {
            "a": {"type": "integer", "format": "u-int32", "minimum": 0},
            "b": {"type": ["integer", "null"], "format": "uint64"},
            "c": {"type": "integer", "format": "uint16", "maximum": 60},
        }});
        add(&mut schema);
        assert_eq!(schema["properties"]["a"]["maximum"], json!(4_294_967_295u64));
        assert_eq!(schema["properties"]["a"]["format"], "uint32");
        assert_eq!(schema["properties"]["b"]["maximum"], json!(u64::MAX));
        assert_eq!(schema["properties"]["c"]["maximum"], json!(60));
        assert_eq!(schema["properties"]["c"]["minimum"], json!(0));
    }
}
