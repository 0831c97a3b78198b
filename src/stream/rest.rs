//! The REST streams: users, segments, webhook endpoints, operations and
//! the recording settings of each platform with their change history, read
//! from `api_url` with natural keys. Each is data: its
//! path, how it is read, and the role it needs; the REST source reads any
//! of them the same way, so a new resource is an entry here.

use super::{Backend, EXTRA_FIELD, ReplicationMethod, StreamDef};

/// One REST resource and how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// The path under `api_url`, query included.
    pub path: &'static str,
    pub reading: Reading,
    /// Whether `created`, `createdBy` and `lastUpdated` are copied from each
    /// object's `metadata` to its top level (the settings streams).
    pub lift_metadata: bool,
    /// The FullStory role an API key needs to read it.
    pub role: &'static str,
    /// Whether it is kept per platform (`?platform=web|mobile`): read once
    /// for each of [`PLATFORMS`], each record told which in a `platform`
    /// field, each platform bookmarked on its own.
    pub platforms: bool,
}

/// The platforms FullStory keeps recording settings for, web first (the
/// only one before platforms were read, and FullStory's default).
pub const PLATFORMS: &[&str] = &[WEB, "mobile"];
/// The web platform.
pub const WEB: &str = "web";
/// The field that names a record's platform.
pub const PLATFORM_FIELD: &str = "platform";

/// How a resource's records are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// A list, every page: the items under `list` of each page.
    Pages { list: &'static str, paging: Paging },
    /// One object.
    One,
    /// Each user of the list at the path (`/v2/users`, read as `Pages`
    /// with `list` and `paging`), fetched on its own at
    /// `{path}/{id}?include_schema=true`; one deleted in between (404) is
    /// skipped.
    EachUser { list: &'static str, paging: Paging },
}

/// How a list pages: the query parameter that takes the token, and the
/// body keys that may carry the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub param: &'static str,
    pub next: &'static [&'static str],
}

/// `/v2/users` pages by `page_token` / `next_page_token`.
pub const V2: Paging = Paging {
    param: "page_token",
    next: &["next_page_token"],
};

/// The v1 APIs page by `paginationToken` / `nextPaginationToken` (an older
/// page of the docs spells the answer `next_pagination_token`).
pub const V1: Paging = Paging {
    param: "paginationToken",
    next: &["nextPaginationToken", "next_pagination_token"],
};

/// The key of the settings streams: when and by whom a version was made,
/// lifted from each object's `metadata`, and its platform.
pub const SETTINGS_KEY: &[&str] = &["created", "createdBy", "lastUpdated", PLATFORM_FIELD];
/// The field settings streams are bookmarked on.
pub const LAST_UPDATED: &str = "lastUpdated";

const ADMIN_OR_ARCHITECT: &str = "Admin or Architect";

/// A REST stream: `$name` with its schema in `schemas/$name.json`.
macro_rules! stream {
    ($static:ident, $name:literal, $resource:expr, $keys:expr, $method:expr, $rkey:expr) => {
        pub static $static: StreamDef = StreamDef {
            name: $name,
            schema: include_str!(concat!("../../schemas/", $name, ".json")),
            key_properties: $keys,
            replication_method: $method,
            replication_key: $rkey,
            derived_key: None,
            extra_field: EXTRA_FIELD,
            backend: Backend::Rest($resource),
            selected_by_default: false,
            custom_properties: false,
        };
    };
}

/// A stream read whole each run (FULL_TABLE), keyed by `id`.
macro_rules! full_table {
    ($static:ident, $name:literal, $path:expr, $reading:expr) => {
        stream!(
            $static,
            $name,
            Resource {
                path: $path,
                reading: $reading,
                lift_metadata: false,
                role: ADMIN_OR_ARCHITECT,
                platforms: false,
            },
            &["id"],
            ReplicationMethod::FullTable,
            None
        );
    };
}

/// A recording settings object (`$path` under
/// `/settings/recording/v1/`) of each platform, bookmarked on `lastUpdated`.
macro_rules! settings {
    ($static:ident, $name:literal, $path:literal, $role:expr) => {
        stream!(
            $static,
            $name,
            Resource {
                path: concat!("/settings/recording/v1/", $path),
                reading: Reading::One,
                lift_metadata: true,
                role: $role,
                platforms: true,
            },
            SETTINGS_KEY,
            ReplicationMethod::Incremental,
            Some(LAST_UPDATED)
        );
    };
}

/// Every version of a recording settings object of each platform, every
/// page of its `/history` (100 a page, FullStory's most), bookmarked on
/// `lastUpdated`.
macro_rules! history {
    ($static:ident, $name:literal, $path:literal, $role:expr) => {
        stream!(
            $static,
            $name,
            Resource {
                path: concat!("/settings/recording/v1/", $path, "/history?limit=100"),
                reading: Reading::Pages {
                    list: "versions",
                    paging: V1,
                },
                lift_metadata: true,
                role: $role,
                platforms: true,
            },
            SETTINGS_KEY,
            ReplicationMethod::Incremental,
            Some(LAST_UPDATED)
        );
    };
}

full_table!(
    USERS,
    "users",
    "/v2/users",
    Reading::Pages {
        list: "results",
        paging: V2,
    }
);
full_table!(
    USER,
    "user",
    "/v2/users",
    Reading::EachUser {
        list: "results",
        paging: V2,
    }
);
full_table!(
    SEGMENTS,
    "segments",
    "/segments/v1?limit=100",
    Reading::Pages {
        list: "segments",
        paging: V1,
    }
);
full_table!(
    WEBHOOK_ENDPOINTS,
    "webhook_endpoints",
    "/webhooks/v1/endpoints?limit=100",
    Reading::Pages {
        list: "endpoints",
        paging: V1,
    }
);
full_table!(
    OPERATIONS,
    "operations",
    "/operations/v1?limit=100",
    Reading::Pages {
        list: "operations",
        paging: V1,
    }
);
settings!(BLOCK_RULES, "block_rules", "blocking", ADMIN_OR_ARCHITECT);
history!(
    BLOCK_RULES_HISTORY,
    "block_rules_history",
    "blocking",
    ADMIN_OR_ARCHITECT
);
settings!(
    DOMAIN_SETTINGS,
    "domain_settings",
    "domain",
    ADMIN_OR_ARCHITECT
);
history!(
    DOMAIN_SETTINGS_HISTORY,
    "domain_settings_history",
    "domain",
    ADMIN_OR_ARCHITECT
);
settings!(GEO_SETTINGS, "geo_settings", "geo", ADMIN_OR_ARCHITECT);
history!(
    GEO_SETTINGS_HISTORY,
    "geo_settings_history",
    "geo",
    ADMIN_OR_ARCHITECT
);
settings!(PRIVACY_SETTINGS, "privacy_settings", "privacy", "Admin");
history!(
    PRIVACY_SETTINGS_HISTORY,
    "privacy_settings_history",
    "privacy",
    "Admin"
);
settings!(
    RECORDING_FEATURES,
    "recording_features",
    "features",
    ADMIN_OR_ARCHITECT
);
history!(
    RECORDING_FEATURES_HISTORY,
    "recording_features_history",
    "features",
    ADMIN_OR_ARCHITECT
);
settings!(
    TARGET_RULES,
    "target_rules",
    "targeting",
    ADMIN_OR_ARCHITECT
);
history!(
    TARGET_RULE_HISTORY,
    "target_rule_history",
    "targeting",
    ADMIN_OR_ARCHITECT
);
