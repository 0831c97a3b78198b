//! `--about`: what the tap is, what it can do, and every setting, in the
//! shape Meltano SDK taps print.

use serde_json::{Map, Value, json};

use crate::config::{ENV_PREFIX, Kind, SETTINGS};

/// The capabilities the tap truly supports.
pub(crate) const CAPABILITIES: &[&str] = &[
    "catalog",
    "discover",
    "state",
    "about",
    "properties",
    "batch",
    "activate-version",
];

const DESCRIPTION: &str = "Singer tap for FullStory: events and individuals (Data Export bundles or Segment Export), users, segments, webhook endpoints, operations and recording settings";

/// Output formats of `--about`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AboutFormat {
    Text,
    Json,
    Markdown,
}

/// The about document in the requested format, ending with a newline.
pub(crate) fn render(format: AboutFormat) -> String {
    match format {
        AboutFormat::Json => {
            let mut text = serde_json::to_string_pretty(&about_json()).unwrap_or_default();
            text.push('\n');
            text
        }
        AboutFormat::Markdown => markdown(),
        AboutFormat::Text => text(),
    }
}

fn about_json() -> Value {
    let mut properties = Map::new();
    for s in SETTINGS {
        let mut prop = json!({
            "type": match s.kind {
                Kind::String | Kind::DateTime => "string",
                Kind::Integer => "integer",
                Kind::Number => "number",
                Kind::StringList => "array",
                Kind::Object => "object",
                Kind::Boolean => "boolean",
            },
            "description": s.description,
        });
        if s.kind == Kind::StringList {
            prop["items"] = json!({"type": "string"});
        }
        if s.kind == Kind::DateTime {
            prop["format"] = json!("date-time");
        }
        match (s.default, s.kind) {
            (Some(default), Kind::Boolean) => prop["default"] = json!(default == "true"),
            (Some(default), _) => prop["default"] = json!(default),
            (None, _) => {}
        }
        if s.secret {
            prop["secret"] = json!(true);
            prop["writeOnly"] = json!(true);
        }
        properties.insert(s.name.to_string(), prop);
    }
    let required: Vec<&str> = SETTINGS
        .iter()
        .filter(|s| s.required)
        .map(|s| s.name)
        .collect();
    json!({
        "name": "tap-fullstory",
        "description": DESCRIPTION,
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": CAPABILITIES,
        "settings": {
            "type": "object",
            "properties": properties,
            "required": required,
        },
        "env_var_prefix": ENV_PREFIX,
    })
}

/// The settings table, as the README carries it.
pub(crate) fn settings_table() -> String {
    let mut out = String::from(
        "| Setting | Type | Required | Default | Description |\n|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let default = s.default.map(|d| format!("`{d}`")).unwrap_or_default();
        let mut description = s.description.to_string();
        if s.secret {
            description.push_str(" Secret.");
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            s.name,
            s.kind.name(),
            if s.required { "yes" } else { "no" },
            default,
            description
        ));
    }
    out
}

fn markdown() -> String {
    format!(
        "# tap-fullstory\n\n{DESCRIPTION}.\n\nVersion: {}\n\n## Capabilities\n\n{}\n\n## Settings\n\n{}\nEvery setting can also come from an environment variable `{ENV_PREFIX}<SETTING>` (upper case) with `--config ENV`.\n",
        env!("CARGO_PKG_VERSION"),
        CAPABILITIES
            .iter()
            .map(|c| format!("- `{c}`"))
            .collect::<Vec<_>>()
            .join("\n"),
        settings_table()
    )
}

fn text() -> String {
    let mut out = format!(
        "Name: tap-fullstory\nDescription: {DESCRIPTION}\nVersion: {}\nCapabilities: {}\nSettings:\n",
        env!("CARGO_PKG_VERSION"),
        CAPABILITIES.join(", ")
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "  - {} ({}{}{}){}: {}\n",
            s.name,
            s.kind.name(),
            if s.required { ", required" } else { "" },
            if s.secret { ", secret" } else { "" },
            s.default
                .map(|d| format!(" [default: {d}]"))
                .unwrap_or_default(),
            s.description
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lists_every_setting_and_marks_the_secret() {
        let v = about_json();
        assert_eq!(
            v["settings"]["properties"].as_object().unwrap().len(),
            SETTINGS.len()
        );
        assert_eq!(
            v["settings"]["properties"]["api_key"]["secret"],
            json!(true)
        );
        assert_eq!(v["settings"]["required"], json!(["api_key", "start_date"]));
        assert!(
            v["capabilities"]
                .as_array()
                .unwrap()
                .contains(&json!("state"))
        );
    }

    #[test]
    fn readme_carries_the_settings_table() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&settings_table()),
            "README.md's settings table differs from `tap-fullstory --about --format markdown`; paste the table from there"
        );
    }
}
