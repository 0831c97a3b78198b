//! The streams the tap offers, as data: adding a stream is one entry in
//! [`STREAMS`] plus its `schemas/<name>.json`.

pub mod property;
pub(crate) mod rest;

pub use property::PropertyType;
pub use rest::{LAST_UPDATED, PLATFORM_FIELD, PLATFORMS, Paging, Reading, Resource, WEB};

/// The JSON type a schema field expects, used to check values cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Integer,
    Number,
    String,
    DateTime,
    Boolean,
    Object,
    Array,
}

/// How a stream is replicated, as the catalog declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMethod {
    Incremental,
    FullTable,
}

impl ReplicationMethod {
    /// The Singer name of the method.
    pub fn name(self) -> &'static str {
        match self {
            ReplicationMethod::Incremental => "INCREMENTAL",
            ReplicationMethod::FullTable => "FULL_TABLE",
        }
    }
}

/// What feeds a stream, named for what it is; `run` turns it into a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The events stream: Data Export bundles, or Segment Export event
    /// exports, as the `source` setting says.
    Events,
    /// Segment Export individual exports, whatever `source` says.
    Individuals,
    /// A REST resource on `api_url`.
    Rest(Resource),
}

/// A key the tap derives for each record by hashing some of its fields.
#[derive(Debug)]
pub struct DerivedKey {
    /// The field the key is written to (the stream's key property).
    pub field: &'static str,
    /// The fields hashed into the key, in hashing order.
    pub identity: &'static [&'static str],
}

/// One stream.
#[derive(Debug)]
pub struct StreamDef {
    pub name: &'static str,
    /// The JSON schema, compiled in from `schemas/<name>.json`.
    pub schema: &'static str,
    pub key_properties: &'static [&'static str],
    pub replication_method: ReplicationMethod,
    /// The field bookmarks are measured against, if any.
    pub replication_key: Option<&'static str>,
    /// The record key the shaper derives; `None` for streams with natural keys.
    pub derived_key: Option<DerivedKey>,
    /// The declared object that holds every key the schema does not name.
    pub extra_field: &'static str,
    pub backend: Backend,
    pub selected_by_default: bool,
    /// Whether its records carry custom properties (see [`PropertyType`]),
    /// which become typed fields of their own.
    pub custom_properties: bool,
}

impl StreamDef {
    /// Fields that are always synced whatever the catalog says.
    pub fn is_automatic(&self, field: &str) -> bool {
        self.key_properties.contains(&field) || self.replication_key == Some(field)
    }
}

/// The per-event key the tap derives; the `events` stream's only key property.
pub const KEY_FIELD: &str = "EventKey";
/// The declared object that holds every key the events schema does not name.
pub const EXTRA_FIELD: &str = "ExtraFields";
/// The field `events` bookmarks are measured against.
pub const REPLICATION_KEY: &str = "EventStart";

/// The fields that identify an event, in the order they are hashed. They are
/// the event's own coordinates (who, which session and page, when, what, on
/// which target); fields that FullStory revises when a session settles
/// (durations, counters, identity linkage such as `IndvId`) are left out so a
/// re-downloaded bundle yields the same keys.
pub const IDENTITY_FIELDS: &[&str] = &[
    "UserId",
    "SessionId",
    "PageId",
    "EventStart",
    "EventType",
    "EventSubType",
    "EventCustomName",
    "EventTargetSelectorTok",
    "EventTargetText",
    "EventPageOffset",
    "EventVarFields",
    "EventVarErrorKind",
    "ReqUrl",
    "ReqMethod",
    "ReqStatus",
    "EventWebSourceFileUrl",
    "EventMobileSourceFile",
];

/// Every event, from Data Export bundles or Segment Export.
pub static EVENTS: StreamDef = StreamDef {
    name: "events",
    schema: include_str!("../../schemas/events.json"),
    key_properties: &[KEY_FIELD],
    replication_method: ReplicationMethod::Incremental,
    replication_key: Some(REPLICATION_KEY),
    derived_key: Some(DerivedKey {
        field: KEY_FIELD,
        identity: IDENTITY_FIELDS,
    }),
    extra_field: EXTRA_FIELD,
    backend: Backend::Events,
    selected_by_default: true,
    custom_properties: true,
};

/// One row per individual active in a window, from Segment Export
/// individual exports; selected by default only with `source: segment_export`.
pub static INDIVIDUALS: StreamDef = StreamDef {
    name: "individuals",
    schema: include_str!("../../schemas/individuals.json"),
    key_properties: &["IndvId"],
    replication_method: ReplicationMethod::Incremental,
    replication_key: None,
    derived_key: None,
    extra_field: EXTRA_FIELD,
    backend: Backend::Individuals,
    selected_by_default: false,
    custom_properties: true,
};

/// Every stream the tap has, in catalog order.
pub static STREAMS: &[&StreamDef] = &[
    &EVENTS,
    &INDIVIDUALS,
    &rest::USERS,
    &rest::USER,
    &rest::SEGMENTS,
    &rest::WEBHOOK_ENDPOINTS,
    &rest::OPERATIONS,
    &rest::BLOCK_RULES,
    &rest::BLOCK_RULES_HISTORY,
    &rest::DOMAIN_SETTINGS,
    &rest::DOMAIN_SETTINGS_HISTORY,
    &rest::GEO_SETTINGS,
    &rest::GEO_SETTINGS_HISTORY,
    &rest::PRIVACY_SETTINGS,
    &rest::PRIVACY_SETTINGS_HISTORY,
    &rest::RECORDING_FEATURES,
    &rest::RECORDING_FEATURES_HISTORY,
    &rest::TARGET_RULES,
    &rest::TARGET_RULE_HISTORY,
];

/// The stream called `name`.
pub fn find(name: &str) -> Option<&'static StreamDef> {
    STREAMS.iter().copied().find(|s| s.name == name)
}

/// The names of every stream, for messages.
pub fn names() -> String {
    STREAMS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}
