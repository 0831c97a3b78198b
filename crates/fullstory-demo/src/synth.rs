//! Deterministic synthetic Data Export rows and bundles.
//!
//! The JSON text is written by hand (not through `serde_json::Value`) so that
//! 64-bit ids are emitted exactly, key sparsity is under our control, and the
//! string escapes vary the way real exports can (raw UTF-8 vs `\uXXXX`,
//! optional `\/`). Every random choice comes from one `fastrand::Rng` seeded
//! by the caller, drawn in a fixed order, so a seed always yields the same
//! bytes.

use std::io::Write;

use chrono::DateTime;
use fastrand::Rng;
use flate2::Compression;
use flate2::write::GzEncoder;

use super::json_text::{Obj, percent_encode};
use super::{BundleSpec, Encoding};

/// Smallest id we generate: FullStory ids observed in the wild sit between
/// 2^52 and 2^63-1, i.e. mostly beyond what an f64 holds exactly.
const ID_MIN: u64 = 1 << 52;
/// Largest id: `i64::MAX`, which some rows carry verbatim.
pub(super) const ID_MAX: u64 = i64::MAX as u64;

/// Gzip `bytes` with flate2's default compression level.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        Compression::default(),
    );
    // Writing into a Vec cannot fail, so these expects are unreachable.
    enc.write_all(bytes).expect("gzip into a Vec cannot fail");
    enc.finish().expect("gzip into a Vec cannot fail")
}

/// `count` bundles of `events_per_bundle` synthetic events each. Bundle `k`
/// covers `[first_start + k*bundle_seconds, first_start + (k+1)*bundle_seconds)`
/// and has id `start*100 + 48`, like the ids seen in real exports.
pub fn synthetic_bundles(
    count: usize,
    events_per_bundle: usize,
    first_start: i64,
    bundle_seconds: i64,
    seed: u64,
    enc: Encoding,
) -> Vec<BundleSpec> {
    synthetic_bundles_with(
        count,
        events_per_bundle,
        first_start,
        bundle_seconds,
        seed,
        enc,
        0,
    )
}

/// [`synthetic_bundles`] whose events carry `extra` more custom properties
/// (see [`synthetic_events_with`]).
pub fn synthetic_bundles_with(
    count: usize,
    events_per_bundle: usize,
    first_start: i64,
    bundle_seconds: i64,
    seed: u64,
    enc: Encoding,
    extra: usize,
) -> Vec<BundleSpec> {
    (0..count)
        .map(|k| {
            let start = first_start + k as i64 * bundle_seconds;
            let stop = start + bundle_seconds;
            let json = synthetic_events_with(
                bundle_seed(seed, k as u64),
                start,
                stop,
                events_per_bundle,
                extra,
            );
            let id = (start as i128 * 100 + 48).to_string();
            BundleSpec::from_events_json(id, start, stop, json, events_per_bundle, enc)
        })
        .collect()
}

/// Per-bundle seed: a splitmix64 step over (seed, k), so neighbouring bundles
/// do not share random streams.
fn bundle_seed(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ k.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A JSON array (as UTF-8 text bytes) of `n` event rows with `EventStart` in
/// `[start, stop)` (unix seconds), ordered by `EventStart`. About 1.2-1.5 KB per
/// row (compact JSON, no whitespace). Deterministic for a given `seed`.
pub fn synthetic_events(seed: u64, start: i64, stop: i64, n: usize) -> Vec<u8> {
    synthetic_events_with(seed, start, stop, n, 0)
}

/// The custom properties of the synthetic data, as [`synthetic_events`]
/// writes them: every type; `page_campaign_str` only from the second day
/// after 2024-01-01 and `evt_order.items_real` (a name with a dot) from the
/// third, so a sync sees new ones appear; the first custom event of each
/// bundle has an `evt_count_int` that is a string, not of its type.
pub const CUSTOM_PROPERTIES: &[&str] = &[
    "user_plan_str",
    "user_vip_bool",
    "user_tags_strs",
    "user_signup_date",
    "user_orders_int",
    "user_ltv_real",
    "user_flags_bools",
    "user_visits_dates",
    "page_section_str",
    "page_campaign_str",
    "evt_amount_real",
    "evt_count_int",
    "evt_item_ids_ints",
    "evt_prices_reals",
    "evt_order.items_real",
];

/// The first day (after 2024-01-01) on which a custom property appears.
pub fn first_day_of(property: &str) -> i64 {
    match property {
        "page_campaign_str" => 1,
        "evt_order.items_real" => 2,
        _ => 0,
    }
}

/// [`synthetic_events`] with `extra` more custom properties on every
/// event (`evt_extra<k>_<type>`, types in turn), for benchmarks of events
/// rich in them.
pub fn synthetic_events_with(seed: u64, start: i64, stop: i64, n: usize, extra: usize) -> Vec<u8> {
    let mut rng = Rng::with_seed(seed);
    let day = (start - DEMO_EPOCH).div_euclid(86_400);
    let lo = start.saturating_mul(1000);
    let hi = stop.saturating_mul(1000).max(lo.saturating_add(1));
    let span = hi - lo;

    // Which entity (if any) of this bundle gets the id i64::MAX.
    let max_slot = rng.u8(..5);

    let n_users = n / 25 + 1;
    let mut users: Vec<User> = (0..n_users).map(|i| User::new(&mut rng, i, lo)).collect();
    for u in &mut users {
        let n_sessions = rng.usize(1..=3);
        u.sessions = (0..n_sessions)
            .map(|_| Session {
                id: random_id(&mut rng),
                start_ms: lo + rng.i64(0..span),
            })
            .collect();
    }
    match max_slot {
        0 => users[0].indv = ID_MAX,
        1 => users[0].uid = ID_MAX,
        2 => users[0].sessions[0].id = ID_MAX,
        _ => {}
    }

    let n_pages = n / 10 + 1;
    let mut pages: Vec<Page> = (0..n_pages)
        .map(|_| Page::new(&mut rng, &users, hi))
        .collect();
    if max_slot == 3 {
        pages[0].id = ID_MAX;
    }

    // Assign each event a page and a time on it, then order by time; the
    // sequence number breaks ties so the order is total and deterministic.
    let mut slots: Vec<(i64, usize, usize)> = (0..n)
        .map(|seq| {
            let p = rng.usize(..n_pages);
            let page = &pages[p];
            let room = (hi - 1 - page.start_ms).min(page.len_ms).max(0);
            (page.start_ms + rng.i64(0..=room), seq, p)
        })
        .collect();
    slots.sort_unstable();
    for &(_, _, p) in &slots {
        pages[p].num_events += 1;
    }

    let mut out = String::with_capacity(n * 1300 + 2);
    out.push('[');
    let mut seen = vec![0u32; n_pages];
    let mut misfit_done = false;
    for (i, &(ms, _, p)) in slots.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // The first row of a page is its navigation, the second its load
        // timing; the rest are a weighted mix.
        let etype = match seen[p] {
            0 => "navigate",
            1 => "load",
            _ => pick_weighted(&mut rng, EVENT_TYPES),
        };
        seen[p] += 1;
        let page = &pages[p];
        let user = &users[page.user];
        let session = &user.sessions[page.session];
        let misfit = etype == "custom" && !misfit_done;
        misfit_done |= misfit;
        let row = Row { day, misfit, extra };
        write_event(&mut out, &mut rng, user, session, page, ms, etype, row);
    }
    out.push(']');
    out.into_bytes()
}

fn random_id(rng: &mut Rng) -> u64 {
    rng.u64(ID_MIN..ID_MAX)
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

fn pick_ref<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

fn pick_weighted(rng: &mut Rng, items: &[(&'static str, u32)]) -> &'static str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut r = rng.u32(..total);
    for &(name, w) in items {
        if r < w {
            return name;
        }
        r -= w;
    }
    items[items.len() - 1].0
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the export's timestamp format.
fn timestamp(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

// ---- fixed vocabularies -------------------------------------------------

const EVENT_TYPES: &[(&str, u32)] = &[
    ("click", 30),
    ("change", 8),
    ("custom", 8),
    ("request", 14),
    ("console_message", 8),
    ("exception", 3),
    ("thrash", 2),
    ("abandon", 3),
    ("pageview", 3),
    ("navigate", 4),
];

const NAMES: &[&str] = &[
    "José Álvarez",
    "Zoë Ångström",
    "山田 太郎",
    "Émilie Dubois 🎉",
    "Ngozi Okonkwo",
    "Søren Kierkegaard",
    "Ana \"Nana\" Lima",
    "李小龙",
    "Дмитрий Иванов",
    "O'Brien, Siobhán",
    "Back\\slash Bob",
    "Tab\tSeparated",
];

const PLANS: &[&str] = &["free", "pro", "enterprise", "équipe"];
const TAGS: &[&str] = &["beta", "früh", "多言語", "vip", "🔥hot", "a\"quoted\"tag"];
const SECTIONS: &[&str] = &["marketing", "checkout", "docs", "アカウント", "help/faq"];

/// (path and query, page title)
const PAGES: &[(&str, &str)] = &[
    ("/", "Home"),
    ("/pricing", "Pricing — plans & prices"),
    ("/checkout/cart", "Cart (3)"),
    ("/search?q=caf%C3%A9&lang=fr", "Recherche : café"),
    ("/blog/%E6%97%A5%E6%9C%AC%E8%AA%9E-post", "ブログ 日本語"),
    (
        "/products/42?ref=%22promo%22&utm_source=news",
        "Product \"42\" ⭐",
    ),
    ("/account/settings#security", "Settings"),
    (
        "/docs/a/b/c/d/e/f/getting-started.html",
        "Getting started \\ docs",
    ),
];

const REFERRERS: &[&str] = &[
    "https://www.google.com/",
    "https://duckduckgo.com/?q=fullstory+export",
    "https://news.ycombinator.com/item?id=123456",
    "https://t.co/AbCdEf",
];

/// (visible text, CSS selector) of click/change targets.
const TARGETS: &[(&str, &str)] = &[
    ("Buy now", "div.cart > button#buy"),
    ("Añadir al carrito 🛒", "form.add-to-cart > button.primary"),
    ("Say \"hi\"", "a[href=\"/contact\"]"),
    ("", "div#root > div:nth-child(2) > svg"),
    ("Next →", "nav.pager > a.next"),
    (
        "C:\\Users\\demo\\report.pdf",
        "ul.files > li:nth-of-type(3) > a",
    ),
    ("línea 1\nlínea 2", "textarea[name='comment']"),
    ("登録する", "button[data-test=\"signup\"]"),
];

const CUSTOM_NAMES: &[&str] = &[
    "Order Completed",
    "Añadido al carrito",
    "signup ✨",
    "video\\play",
    "Feature \"X\" used",
];

const CONSOLE_MESSAGES: &[(&str, &str)] = &[
    (
        "warn",
        "Warning: \"legacy\" API is deprecated\n    at app.js:10:5",
    ),
    ("log", "saved to C:\\temp\\cache\\x.json"),
    ("error", "unexpected control char \u{1} in payload"),
    ("info", "ログ message ✅ done"),
    ("log", "tab\tseparated\tvalues\r\n"),
];

const EXCEPTIONS: &[(&str, &str)] = &[
    (
        "TypeError",
        "Cannot read properties of undefined (reading 'id')",
    ),
    ("ReferenceError", "ga is not defined"),
    ("SyntaxError", "Unexpected token '<' in JSON at position 0"),
    ("Error", "Échec du chargement: « timeout »"),
];

const REQUEST_URLS: &[&str] = &[
    "https://api.example.com/v2/cart?id=123",
    "https://api.example.com/v2/users/me",
    "https://cdn.example.com/img/caf%C3%A9.png",
    "https://api.example.com/graphql",
];
const REQUEST_METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH"];
const REQUEST_STATUSES: &[u16] = &[200, 200, 200, 201, 204, 304, 400, 404, 500, 503];

struct WebProfile {
    agent: &'static str,
    browser: &'static str,
    version: &'static str,
    device: &'static str,
    os: &'static str,
    screen: (u32, u32),
}

const WEB: &[WebProfile] = &[
    WebProfile {
        agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        browser: "Chrome",
        version: "120.0.0.0",
        device: "Desktop",
        os: "Windows",
        screen: (1920, 1080),
    },
    WebProfile {
        agent: "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        browser: "Firefox",
        version: "121.0",
        device: "Desktop",
        os: "Linux",
        screen: (2560, 1440),
    },
    WebProfile {
        agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
        browser: "Safari",
        version: "17.2",
        device: "Desktop",
        os: "Mac OS X",
        screen: (1512, 982),
    },
    WebProfile {
        agent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
        browser: "Mobile Safari",
        version: "17.2",
        device: "Mobile",
        os: "iOS",
        screen: (390, 844),
    },
    WebProfile {
        agent: "Mozilla/5.0 (Linux; Android 14; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Safari/537.36",
        browser: "Chrome",
        version: "120.0.6099.144",
        device: "Tablet",
        os: "Android",
        screen: (1600, 2560),
    },
];

struct AppProfile {
    name: &'static str,
    package: &'static str,
    model: &'static str,
    vendor: &'static str,
    version: &'static str,
    os_version: &'static str,
    os: &'static str,
    views: &'static [&'static str],
}

const APPS: &[AppProfile] = &[
    AppProfile {
        name: "Shop Ünïcode",
        package: "com.example.shop",
        model: "iPhone15,2",
        vendor: "Apple",
        version: "4.2.0 (1234)",
        os_version: "17.1",
        os: "iOS",
        views: &[
            "HomeViewController",
            "CartViewController",
            "結果ViewController",
        ],
    },
    AppProfile {
        name: "Shop",
        package: "com.example.shop.android",
        model: "Pixel 7",
        vendor: "Google",
        version: "4.1.3",
        os_version: "14",
        os: "Android",
        views: &["MainActivity", "CheckoutFragment", "SettingsActivity"],
    },
];

// ---- entities ------------------------------------------------------------

enum Platform {
    Web(&'static WebProfile),
    App(&'static AppProfile),
}

struct User {
    indv: u64,
    uid: u64,
    app_key: Option<String>,
    name: Option<&'static str>,
    email: Option<String>,
    created_ms: i64,
    plan: Option<&'static str>,
    vip: Option<bool>,
    tags: Option<Vec<&'static str>>,
    signup_ms: Option<i64>,
    platform: Platform,
    sessions: Vec<Session>,
}

impl User {
    fn new(rng: &mut Rng, i: usize, lo: i64) -> User {
        let identified = rng.u8(..10) < 6;
        let created_ms = lo - rng.i64(0..=400 * 86_400_000);
        let platform = if rng.u8(..6) == 0 {
            Platform::App(pick_ref(rng, APPS))
        } else {
            Platform::Web(pick_ref(rng, WEB))
        };
        let tags = if identified && rng.bool() {
            let n = rng.usize(0..=3);
            Some((0..n).map(|_| pick(rng, TAGS)).collect())
        } else {
            None
        };
        User {
            indv: random_id(rng),
            uid: random_id(rng),
            app_key: identified.then(|| format!("usr_{:06}", rng.u32(..1_000_000))),
            name: identified
                .then(|| pick(rng, NAMES))
                .filter(|_| rng.u8(..8) != 0),
            email: identified.then(|| {
                if rng.u8(..6) == 0 {
                    format!("zoë+{i}@exämple.com")
                } else {
                    format!("user{i}.{}@example.com", rng.u32(..10_000))
                }
            }),
            created_ms,
            plan: identified.then(|| pick(rng, PLANS)),
            vip: identified.then(|| rng.u8(..5) == 0),
            tags,
            signup_ms: (identified && rng.bool()).then(|| created_ms + rng.i64(0..86_400_000)),
            platform,
            sessions: Vec::new(),
        }
    }
}

struct Session {
    id: u64,
    start_ms: i64,
}

struct Page {
    user: usize,
    session: usize,
    id: u64,
    start_ms: i64,
    len_ms: i64,
    active_ms: i64,
    path: &'static str,
    name: &'static str,
    referrer: Option<&'static str>,
    ip: String,
    lat_long: Option<String>,
    section: Option<&'static str>,
    viewport: (u32, u32),
    cluster: u32,
    scroll: u32,
    infos: u32,
    warnings: u32,
    errors: u32,
    num_events: u32,
}

impl Page {
    fn new(rng: &mut Rng, users: &[User], hi: i64) -> Page {
        let user = rng.usize(..users.len());
        let session = rng.usize(..users[user].sessions.len());
        let s_start = users[user].sessions[session].start_ms;
        let offset = rng.i64(0..=((hi - 1 - s_start) / 4).clamp(0, 3_600_000));
        let len_ms = rng.i64(5_000..=1_800_000);
        let (path, name) = pick(rng, PAGES);
        let ip = if rng.u8(..5) == 0 {
            format!("2001:db8:{:x}::{:x}", rng.u16(..), rng.u16(..))
        } else {
            format!("203.0.113.{}", rng.u8(1..255))
        };
        let (w, h) = match users[user].platform {
            Platform::Web(p) => p.screen,
            Platform::App(_) => (390, 844),
        };
        Page {
            user,
            session,
            id: random_id(rng),
            start_ms: s_start + offset,
            len_ms,
            active_ms: rng.i64(0..=len_ms),
            path,
            name,
            referrer: (rng.u8(..3) != 0).then(|| pick(rng, REFERRERS)),
            ip,
            lat_long: (rng.u8(..8) != 0).then(|| {
                format!(
                    "{:.6},{:.6}",
                    rng.f64() * 180.0 - 90.0,
                    rng.f64() * 360.0 - 180.0
                )
            }),
            section: (rng.u8(..3) != 0).then(|| pick(rng, SECTIONS)),
            viewport: (w - rng.u32(..=w / 10), h - rng.u32(..=h / 4)),
            cluster: rng.u32(..5000),
            scroll: rng.u32(..=100),
            infos: rng.u32(..20),
            warnings: rng.u32(..5),
            errors: rng.u32(..3),
            num_events: 0,
        }
    }
}

// ---- rows ----------------------------------------------------------------

/// 2024-01-01T00:00:00Z: day 0 of the properties that appear later.
const DEMO_EPOCH: i64 = 1_704_067_200;

/// What a row's custom properties depend on besides the draws.
#[derive(Clone, Copy)]
struct Row {
    /// Days since [`DEMO_EPOCH`] of the row's bundle.
    day: i64,
    /// Whether its `evt_count_int` is a string.
    misfit: bool,
    /// How many `evt_extra<k>_<type>` properties it gets.
    extra: usize,
}

#[allow(clippy::too_many_arguments)]
fn write_event(
    out: &mut String,
    rng: &mut Rng,
    user: &User,
    session: &Session,
    page: &Page,
    ms: i64,
    etype: &str,
    row: Row,
) {
    // A fifth of the rows escape all non-ASCII text as \uXXXX, and a few
    // escape '/' too, so clients meet every legal way to spell a string.
    let ascii = rng.u8(..5) == 0;
    let slash = rng.u8(..10) == 0;
    let mut o = Obj::open(out, ascii, slash);

    o.num("IndvId", user.indv);
    o.num("UserId", user.uid);
    o.num("SessionId", session.id);
    o.num("PageId", page.id);
    o.str("UserCreated", &timestamp(user.created_ms));
    o.opt_str("UserAppKey", user.app_key.as_deref());
    o.opt_str("UserDisplayName", user.name);
    match &user.email {
        Some(e) => o.str("UserEmail", e),
        // Anonymous users: mostly absent, occasionally an explicit null.
        None if rng.u8(..10) == 0 => o.null("UserEmail"),
        None => {}
    }

    o.str("EventStart", &timestamp(ms));
    o.str("EventType", etype);
    write_type_fields(&mut o, rng, user, etype);
    o.num("EventPageOffset", ms - page.start_ms);
    o.num("EventSessionOffset", ms - session.start_ms);

    write_page_fields(&mut o, user, session, page);

    if etype == "load" {
        let dom = rng.u32(50..3000);
        o.num("LoadDomContentTime", dom);
        o.num("LoadEventTime", dom + rng.u32(0..2000));
        o.num("LoadFirstPaintTime", rng.u32(20..=dom));
        o.num("LoadLargestPaintTime", dom + rng.u32(0..1500));
    }

    if let Platform::App(app) = user.platform {
        o.str("AppName", app.name);
        o.str("AppPackageName", app.package);
        o.str("AppDeviceModel", app.model);
        o.str("AppDeviceVendor", app.vendor);
        o.str("AppVersion", app.version);
        o.str("AppOsVersion", app.os_version);
        o.str("AppViewName", pick(rng, app.views));
    }

    // Custom vars: user_* on every row of an identified user, page_* on the
    // page's rows, evt_* only on custom events.
    o.opt_str("user_plan_str", user.plan);
    if let Some(v) = user.vip {
        o.bool("user_vip_bool", v);
    }
    if let Some(tags) = &user.tags {
        o.strs("user_tags_strs", tags);
    }
    if let Some(ms) = user.signup_ms {
        o.str("user_signup_date", &timestamp(ms));
    }
    o.opt_str("page_section_str", page.section);
    if etype == "custom" {
        let amount = match rng.u8(..4) {
            0 => "0.30000000000000004".to_string(),
            1 => format!("{}", rng.u32(..100_000)),
            2 => "1.5e-7".to_string(),
            _ => format!("{:.2}", rng.f64() * 500.0),
        };
        o.num("evt_amount_real", amount);
        let count = rng.i64(-3..1000);
        if row.misfit {
            o.str("evt_count_int", "n/a");
        } else {
            o.num("evt_count_int", count);
        }
    }
    // The rest are derived from ids and times rather than drawn, so the
    // data above stays as it was.
    if user.plan.is_some() {
        let uid = user.uid;
        o.num("user_orders_int", uid % 40);
        o.num("user_ltv_real", format!("{}.{:02}", uid % 5000, uid % 97));
        o.list(
            "user_flags_bools",
            &[
                uid.is_multiple_of(2).to_string(),
                uid.is_multiple_of(3).to_string(),
            ],
        );
        let visits = [
            user.created_ms,
            user.created_ms + (uid % 1000) as i64 * 60_000,
        ];
        o.strs(
            "user_visits_dates",
            &visits.map(timestamp).each_ref().map(String::as_str),
        );
    }
    if row.day >= first_day_of("page_campaign_str") && page.id.is_multiple_of(3) {
        o.str(
            "page_campaign_str",
            ["spring", "sale", "launch"][(page.id % 7 % 3) as usize],
        );
    }
    if etype == "custom" {
        let n = (ms % 4) as u64;
        let ids: Vec<String> = (0..n)
            .map(|k| (ms as u64 / 7 + k * 13).to_string())
            .collect();
        o.list("evt_item_ids_ints", &ids);
        // Whole and fractional prices together, as FullStory sends them.
        o.list("evt_prices_reals", &["1.5".into(), (ms % 50).to_string()]);
        if row.day >= first_day_of("evt_order.items_real") {
            o.num("evt_order.items_real", format!("{}.5", ms % 9));
        }
    }
    const TYPES: &[&str] = &["str", "int", "real", "bool", "date", "strs", "ints"];
    for k in 0..row.extra {
        let name = format!("evt_extra{k}_{}", TYPES[k % TYPES.len()]);
        let v = ms as u64 ^ (k as u64 * 0x9E37);
        match TYPES[k % TYPES.len()] {
            "str" => o.str(&name, ["alpha", "beta", "gamma"][(v % 3) as usize]),
            "int" => o.num(&name, v % 100_000),
            "real" => o.num(&name, format!("{}.{}", v % 1000, v % 10)),
            "bool" => o.bool(&name, v.is_multiple_of(2)),
            "date" => o.str(&name, &timestamp(ms - (v % 86_400) as i64 * 1000)),
            "strs" => o.strs(&name, &["x", "y"]),
            _ => o.list(&name, &[(v % 10).to_string(), (v % 7).to_string()]),
        }
    }
    o.close();
}

fn write_type_fields(o: &mut Obj<'_>, rng: &mut Rng, user: &User, etype: &str) {
    let mobile = matches!(user.platform, Platform::App(_));
    match etype {
        "click" | "change" | "abandon" | "thrash" => {
            let (text, selector) = pick(rng, TARGETS);
            if etype == "change" {
                o.str("EventSubType", pick(rng, &["input", "select", "checkbox"]));
            }
            if !text.is_empty() || rng.bool() {
                o.str("EventTargetText", text);
            }
            o.str("EventTargetSelectorTok", &percent_encode(selector));
            o.str("EventTargetSelector", selector);
            match etype {
                "click" => {
                    if rng.u8(..4) == 0 {
                        o.num("EventModFrustrated", rng.u32(1..8));
                    }
                    if rng.u8(..6) == 0 {
                        o.num("EventModDead", 1);
                    }
                    if rng.u8(..8) == 0 {
                        o.num("EventModError", rng.u8(1..=3));
                    }
                    if rng.u8(..10) == 0 {
                        o.num("EventModSuspicious", rng.u8(1..=2));
                    }
                }
                "thrash" => o.num("EventModFrustrated", rng.u32(1..20)),
                "abandon" => o.num("EventDuration", rng.u32(500..60_000)),
                _ => {}
            }
        }
        "custom" => {
            o.str("EventCustomName", pick(rng, CUSTOM_NAMES));
            // EventVarFields is a JSON document inside a string: escapes
            // nested in escapes.
            let fields = format!(
                "{{\"product\":\"Café \\\"Noir\\\"\",\"qty\":{},\"path\":\"a\\\\b\"}}",
                rng.u8(1..10)
            );
            o.str("EventVarFields", &fields);
        }
        "request" => {
            let started = rng.u32(1..5000);
            o.num("EventDuration", started);
            if rng.bool() {
                o.num("EventSecondaryDuration", rng.u32(0..=started));
            }
            o.str("ReqUrl", pick(rng, REQUEST_URLS));
            o.str("ReqMethod", pick(rng, REQUEST_METHODS));
            o.num("ReqStatus", pick(rng, REQUEST_STATUSES));
        }
        "console_message" => {
            let (sub, msg) = pick(rng, CONSOLE_MESSAGES);
            o.str("EventSubType", sub);
            o.str("EventTargetText", msg);
        }
        "exception" => {
            let (kind, msg) = pick(rng, EXCEPTIONS);
            o.str("EventTargetText", msg);
            o.str("EventVarErrorKind", kind);
            o.num("EventModError", rng.u8(1..=3));
            if mobile {
                o.str("EventMobileSourceFile", "Shop/CartViewController.swift:214");
            } else {
                o.str(
                    "EventWebSourceFileUrl",
                    "https://cdn.example.com/static/js/app.3f9a2c.js",
                );
            }
        }
        "load" => {
            o.num("EventDuration", rng.u32(100..8000));
            if rng.bool() {
                o.num("EventFirstInputDelay", rng.u32(0..400));
            }
            // Many-digit floats, plus the odd exponent form.
            let cls = if rng.u8(..10) == 0 {
                "1.2345e-5".to_string()
            } else {
                format!("{:.17}", rng.f64() * 0.5)
            };
            o.num("EventCumulativeLayoutShift", cls);
        }
        // The guard draws from rng only for these two types.
        "navigate" | "pageview" if rng.u8(..3) == 0 => {
            let sub = pick(rng, &["pushState", "popState", "hashChange"]);
            o.str("EventSubType", sub);
        }
        _ => {}
    }
}

fn write_page_fields(o: &mut Obj<'_>, user: &User, session: &Session, page: &Page) {
    o.str("PageName", page.name);
    match user.platform {
        Platform::Web(w) => {
            o.str("PageUrl", &format!("https://shop.example.com{}", page.path));
            o.opt_str("PageRefererUrl", page.referrer);
            o.str("PageIp", &page.ip);
            o.opt_str("PageLatLong", page.lat_long.as_deref());
            o.str("PageAgent", w.agent);
            o.str("PageUserAgent", w.agent);
            o.str("PageBrowser", w.browser);
            o.str("PageBrowserVersion", w.version);
            o.str("PageDevice", w.device);
            o.str("PagePlatform", "Web");
            o.str("PageOperatingSystem", w.os);
        }
        Platform::App(a) => {
            o.str("PageIp", &page.ip);
            o.opt_str("PageLatLong", page.lat_long.as_deref());
            o.str("PageDevice", "Mobile");
            o.str("PagePlatform", "App");
            o.str("PageOperatingSystem", a.os);
        }
    }
    o.str("PageStart", &timestamp(page.start_ms));
    o.str("SessionStart", &timestamp(session.start_ms));
    o.num("PageDuration", page.len_ms);
    o.num("PageActiveDuration", page.active_ms);
    let (sw, sh) = match user.platform {
        Platform::Web(w) => w.screen,
        Platform::App(_) => (390, 844),
    };
    o.num("PageScreenWidth", sw);
    o.num("PageScreenHeight", sh);
    o.num("PageViewportWidth", page.viewport.0);
    o.num("PageViewportHeight", page.viewport.1);
    o.num("PageNumEvents", page.num_events);
    o.num("PageNumDerivedEvents", page.num_events / 3);
    o.num("PageNumInfos", page.infos);
    o.num("PageNumWarnings", page.warnings);
    o.num("PageNumErrors", page.errors);
    o.num("PageClusterId", page.cluster);
    o.num("PageMaxScrollDepthPercent", page.scroll);
}
