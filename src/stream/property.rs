//! Custom properties as FullStory names them, `<prefix>_<name>_<type>`
//! (`user_plan_str`, `evt_order.items_real`, `page_tags_strs`): the naming
//! rule, and the type and schema each name gives.

use serde_json::{Value, json};

use super::FieldKind;

/// The prefixes custom property names start with.
const PREFIXES: &[&str] = &["user_", "evt_", "page_", "acct_"];

/// The type a custom property's name gives it: the text after its last
/// underscore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyType {
    Str,
    Int,
    Real,
    Bool,
    Date,
    Strs,
    Ints,
    Reals,
    Bools,
    Dates,
}

impl PropertyType {
    /// The type of a custom property called `name`, or `None` when the name
    /// is not one: a known prefix, a name of at least one character, and a
    /// known type after the last underscore.
    pub fn of(name: &str) -> Option<PropertyType> {
        let (head, suffix) = name.rsplit_once('_')?;
        let kind = match suffix {
            "str" => PropertyType::Str,
            "int" => PropertyType::Int,
            "real" => PropertyType::Real,
            "bool" => PropertyType::Bool,
            "date" => PropertyType::Date,
            "strs" => PropertyType::Strs,
            "ints" => PropertyType::Ints,
            "reals" => PropertyType::Reals,
            "bools" => PropertyType::Bools,
            "dates" => PropertyType::Dates,
            _ => return None,
        };
        let prefix = PREFIXES.iter().find(|p| head.starts_with(*p))?;
        (head.len() > prefix.len()).then_some(kind)
    }

    /// The type of one value, or of each element of a list.
    pub fn kind(self) -> FieldKind {
        match self {
            PropertyType::Str | PropertyType::Strs => FieldKind::String,
            PropertyType::Int | PropertyType::Ints => FieldKind::Integer,
            PropertyType::Real | PropertyType::Reals => FieldKind::Number,
            PropertyType::Bool | PropertyType::Bools => FieldKind::Boolean,
            PropertyType::Date | PropertyType::Dates => FieldKind::DateTime,
        }
    }

    /// Whether its values are lists.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            PropertyType::Strs
                | PropertyType::Ints
                | PropertyType::Reals
                | PropertyType::Bools
                | PropertyType::Dates
        )
    }

    /// The property's JSON schema. A list of reals declares no item type:
    /// FullStory sends whole numbers in them as `2`, not `2.0`, and a
    /// target typing the items as numbers (target-postgres) refuses a list
    /// that mixes `1.5` and `2`; without an item type it stores the list as
    /// JSON.
    pub fn schema(self) -> Value {
        let scalar = |t: &str| json!({"type": ["null", t]});
        let list = |items: Value| json!({"type": ["null", "array"], "items": items});
        match self {
            PropertyType::Str => scalar("string"),
            PropertyType::Int => scalar("integer"),
            PropertyType::Real => scalar("number"),
            PropertyType::Bool => scalar("boolean"),
            PropertyType::Date => json!({"type": ["null", "string"], "format": "date-time"}),
            PropertyType::Strs => list(json!({"type": "string"})),
            PropertyType::Ints => list(json!({"type": "integer"})),
            PropertyType::Reals => json!({"type": ["null", "array"]}),
            PropertyType::Bools => list(json!({"type": "boolean"})),
            PropertyType::Dates => list(json!({"type": "string", "format": "date-time"})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_their_type_by_the_last_underscore() {
        use PropertyType::*;
        for (name, want) in [
            ("user_plan_str", Some(Str)),
            ("evt_price_raw_real", Some(Real)),
            ("evt_order.items_real", Some(Real)),
            ("page_tags_strs", Some(Strs)),
            ("acct_size_int", Some(Int)),
            ("user_Plan_str", Some(Str)),
            ("user_vip_bool", Some(Bool)),
            ("user_seen_dates", Some(Dates)),
            ("evt_x_ints", Some(Ints)),
            ("evt_x_reals", Some(Reals)),
            ("evt_x_bools", Some(Bools)),
            ("user_signup_date", Some(Date)),
            // Not custom properties.
            ("user_str", None),
            ("user__str", None),
            ("UserId", None),
            ("other_plan_str", None),
            ("user_plan_text", None),
            ("user_plan", None),
            ("evt_amount_Real", None),
        ] {
            assert_eq!(PropertyType::of(name), want, "{name}");
        }
    }
}
