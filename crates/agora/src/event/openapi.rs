//! OpenAPI schemas (utoipa) of the JSON forms whose serde is written by hand here: [`DataTypes`], [`NodeId`].

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

use super::{DataTypes, NodeId};

/// Every name `DataTypes` accepts and writes: the named types, then `bit<N>` for each bit without a name.
fn accepted_names() -> Vec<String> {
    let named = DataTypes::NAMES.iter().map(|n| (*n).to_string());
    let numbered = (DataTypes::NAMES.len()..64).map(|n| format!("bit{n}"));
    named.chain(numbered).collect()
}

/// A list of JMAP type names (the bitmap's JSON form).
impl utoipa::PartialSchema for DataTypes {
    fn schema() -> RefOr<Schema> {
        let name = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(accepted_names()));
        ArrayBuilder::new()
            .items(name)
            .description(Some(
                "JMAP data types by name; a bit without a name is written \"bit<N>\".",
            ))
            .into()
    }
}

impl utoipa::ToSchema for DataTypes {}

/// A node id: 1..=65535.
impl utoipa::PartialSchema for NodeId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(u16::MAX))
            .into()
    }
}

impl utoipa::ToSchema for NodeId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_name_parses_and_every_bit_has_one() {
        let names = accepted_names();
        assert_eq!(names.len(), 64);
        for name in &names {
            assert!(DataTypes::from_name(name).is_some(), "{name}");
        }
    }
}
