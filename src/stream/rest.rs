//! The REST streams: users, segments and the recording settings with their
//! change history, read from `api_url` with natural keys.

use super::{Backend, EXTRA_FIELD, ReplicationMethod, StreamDef};

/// Which REST resource feeds a stream, and how it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestKind {
    /// `GET /v2/users`, every page.
    Users,
    /// `GET /v2/users/{id}?include_schema=true` for each user listed; one
    /// deleted in between (404) is skipped.
    User,
    /// `GET /segments/v1`, every page.
    Segments,
    /// One settings object: `GET /settings/recording/v1/{path}`.
    Settings(&'static str),
    /// Its versions: `GET /settings/recording/v1/{path}/history`, every page.
    History(&'static str),
}

impl RestKind {
    /// The FullStory role an API key needs to read the resource.
    pub fn role(self) -> &'static str {
        match self {
            RestKind::Settings("privacy") | RestKind::History("privacy") => "Admin",
            _ => "Admin or Architect",
        }
    }
}

/// The key of the settings streams, lifted from each object's `metadata`.
pub const SETTINGS_KEY: &[&str] = &["created", "createdBy", "lastUpdated"];
/// The field settings streams are bookmarked on.
pub const LAST_UPDATED: &str = "lastUpdated";

macro_rules! stream {
    ($static:ident, $name:literal, $kind:expr, $keys:expr, $method:expr, $rkey:expr) => {
        pub static $static: StreamDef = StreamDef {
            name: $name,
            schema: include_str!(concat!("../../schemas/", $name, ".json")),
            key_properties: $keys,
            replication_method: $method,
            replication_key: $rkey,
            derived_key: None,
            extra_field: EXTRA_FIELD,
            backend: Backend::Rest($kind),
            selected_by_default: false,
        };
    };
}

macro_rules! settings {
    ($static:ident, $name:literal, $kind:expr) => {
        stream!(
            $static,
            $name,
            $kind,
            SETTINGS_KEY,
            ReplicationMethod::Incremental,
            Some(LAST_UPDATED)
        );
    };
}

stream!(
    USERS,
    "users",
    RestKind::Users,
    &["id"],
    ReplicationMethod::FullTable,
    None
);
stream!(
    USER,
    "user",
    RestKind::User,
    &["id"],
    ReplicationMethod::FullTable,
    None
);
stream!(
    SEGMENTS,
    "segments",
    RestKind::Segments,
    &["id"],
    ReplicationMethod::FullTable,
    None
);
settings!(BLOCK_RULES, "block_rules", RestKind::Settings("blocking"));
settings!(
    BLOCK_RULES_HISTORY,
    "block_rules_history",
    RestKind::History("blocking")
);
settings!(
    DOMAIN_SETTINGS,
    "domain_settings",
    RestKind::Settings("domain")
);
settings!(
    DOMAIN_SETTINGS_HISTORY,
    "domain_settings_history",
    RestKind::History("domain")
);
settings!(GEO_SETTINGS, "geo_settings", RestKind::Settings("geo"));
settings!(
    GEO_SETTINGS_HISTORY,
    "geo_settings_history",
    RestKind::History("geo")
);
settings!(
    PRIVACY_SETTINGS,
    "privacy_settings",
    RestKind::Settings("privacy")
);
settings!(
    PRIVACY_SETTINGS_HISTORY,
    "privacy_settings_history",
    RestKind::History("privacy")
);
settings!(
    RECORDING_FEATURES,
    "recording_features",
    RestKind::Settings("features")
);
settings!(
    RECORDING_FEATURES_HISTORY,
    "recording_features_history",
    RestKind::History("features")
);
settings!(
    TARGET_RULES,
    "target_rules",
    RestKind::Settings("targeting")
);
settings!(
    TARGET_RULE_HISTORY,
    "target_rule_history",
    RestKind::History("targeting")
);
