//! Field names: every unknown one in a file, each with a "did you mean".
//!
//! serde's `deny_unknown_fields` stops at the first unknown field; an operator fixing a
//! file wants all of them. So the parsed document (with spans) is walked here against
//! the field names serde itself knows for each table: they are read from the derived
//! `Deserialize` impls (see [`fields_of`]), so the lists cannot drift from the structs.

use std::ops::Range;

use serde::de::{self, DeserializeOwned, Visitor};
use toml::de::{DeTable, DeValue};

use super::schema::{
    AdminSettings, HealthSettings, MetricsSettings, ProcessSettings, RawLimits, RawListener, RawRoute, RawTls, ResolverSettings, TcpKeepalive,
    TelemetrySettings,
};

/// Top-level keys: the sections of the file.
pub(super) const SECTIONS: &[&str] = &["listener", "route", "resolver", "process", "admin", "health", "metrics", "telemetry"];

/// Which kind of table a part of the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Root,
    Listener,
    Route,
    Tls,
    Keepalive,
    Endpoint,
    Outlier,
    HealthCheck,
    ProxyProtocol,
    Limits,
    Resolver,
    Process,
    Admin,
    Health,
    Metrics,
    Telemetry,
}

impl Table {
    /// The field names serde accepts in this table.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Table::Root => SECTIONS,
            Table::Listener => fields_of::<RawListener>(),
            Table::Route => fields_of::<RawRoute>(),
            Table::Tls => fields_of::<RawTls>(),
            Table::Keepalive => fields_of::<TcpKeepalive>(),
            Table::Endpoint => fields_of::<super::endpoints::RawEndpoint>(),
            Table::Outlier => fields_of::<super::endpoints::OutlierDetection>(),
            Table::HealthCheck => fields_of::<super::endpoints::HealthCheck>(),
            Table::ProxyProtocol => fields_of::<super::proxy::RawProxyProtocol>(),
            Table::Limits => fields_of::<RawLimits>(),
            Table::Resolver => fields_of::<ResolverSettings>(),
            Table::Process => fields_of::<ProcessSettings>(),
            Table::Admin => fields_of::<AdminSettings>(),
            Table::Health => fields_of::<HealthSettings>(),
            Table::Metrics => fields_of::<MetricsSettings>(),
            Table::Telemetry => fields_of::<TelemetrySettings>(),
        }
    }

    /// The table (or array of tables) that `field` holds, if it holds one.
    fn child(self, field: &str) -> Option<Table> {
        Some(match (self, field) {
            (Table::Root, "listener") => Table::Listener,
            (Table::Root, "route") => Table::Route,
            (Table::Root, "resolver") => Table::Resolver,
            (Table::Root, "process") => Table::Process,
            (Table::Root, "admin") => Table::Admin,
            (Table::Root, "health") => Table::Health,
            (Table::Root, "metrics") => Table::Metrics,
            (Table::Root, "telemetry") => Table::Telemetry,
            (Table::Listener, "tls") | (Table::Route, "upstream_tls" | "downstream_tls") => Table::Tls,
            (Table::Listener | Table::Route, "tcp_keepalive") => Table::Keepalive,
            (Table::Route, "upstreams") => Table::Endpoint,
            (Table::Route, "outlier_detection") => Table::Outlier,
            (Table::Route, "health_check") => Table::HealthCheck,
            (Table::Listener, "proxy_protocol") => Table::ProxyProtocol,
            (Table::Listener, "limits") => Table::Limits,
            _ => return None,
        })
    }
}

/// An unknown field: where it is, its path, what to write instead, and the span of the
/// `[[listener]]`/`[[route]]` entry it sits in (whose other findings it would confuse).
pub(super) struct Unknown {
    pub span: Range<usize>,
    pub field: String,
    pub message: String,
    pub entry: Option<Range<usize>>,
}

/// Every unknown field in the document, in no particular order.
pub(super) fn unknown_fields(root: &DeTable<'_>) -> Vec<Unknown> {
    let mut found = Vec::new();
    walk(root, Table::Root, "", None, &mut found);
    found
}

fn walk(table: &DeTable<'_>, kind: Table, path: &str, entry: Option<&Range<usize>>, found: &mut Vec<Unknown>) {
    let known = kind.fields();
    for (key, value) in table {
        let name: &str = key.get_ref();
        if !known.contains(&name) {
            found.push(Unknown { span: key.span(), field: join(path, name), message: unknown_message(name, known), entry: entry.cloned() });
            continue;
        }
        let Some(child) = kind.child(name) else { continue };
        match value.get_ref() {
            DeValue::Table(inner) => walk(inner, child, &join(path, name), entry, found),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let DeValue::Table(inner) = item.get_ref() {
                        let span = item.span();
                        walk(inner, child, &join(path, &entry_label(name, i, inner)), entry.or(Some(&span)), found);
                    }
                }
            }
            // A value of the wrong type: serde reports it.
            _ => {}
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// `listener[1] (mysql)`: an array entry, named by its `name` when it has one.
pub(super) fn entry_label(section: &str, index: usize, table: &DeTable<'_>) -> String {
    match table.get("name").and_then(|v| v.get_ref().as_str()) {
        Some(name) => format!("{section}[{index}] ({name})"),
        None => format!("{section}[{index}]"),
    }
}

fn unknown_message(name: &str, known: &[&str]) -> String {
    let expected = known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    match did_you_mean(name, known) {
        Some(close) => format!("unknown field `{name}`: did you mean `{close}`? (expected one of {expected})"),
        None => format!("unknown field `{name}`: remove it or use one of the known fields (expected one of {expected})"),
    }
}

/// The known name closest to `name`, if one is close enough to be what was meant:
/// the same up to case, `_` and `-` (`subjectAltNames`), a prefix (`cipher`), or a
/// small edit distance (`rout`, `upstrem`, `adress`, `mood`).
pub(super) fn did_you_mean<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let plain = |s: &str| s.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_ascii_lowercase();
    let wanted = plain(name);
    if wanted.is_empty() {
        return None;
    }
    // Short names only tolerate what leaves most of them standing.
    let limit = if wanted.len() < 4 { wanted.len().saturating_sub(1).min(1) } else { (wanted.len() / 3).clamp(2, 3) };
    known
        .iter()
        .map(|k| (k, plain(k)))
        .filter_map(|(k, candidate)| {
            let distance = if candidate.starts_with(&wanted) && wanted.len() >= 4 { 0 } else { strsim::levenshtein(&wanted, &candidate) };
            (distance <= limit).then_some((distance, *k))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// serde's "unknown variant `mutal`, expected one of ..." with the likely one added.
pub(super) fn suggest_variant(message: &str) -> String {
    let quoted = |s: &str| s.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>();
    let Some(rest) = message.strip_prefix("unknown variant ") else { return message.to_owned() };
    let Some((given, expected)) = rest.split_once(", expected") else { return message.to_owned() };
    let (given, expected) = (quoted(given), quoted(expected));
    let known: Vec<&str> = expected.iter().map(String::as_str).collect();
    match given.first().and_then(|g| did_you_mean(g, &known)) {
        Some(close) => format!("{message}: did you mean `{close}`?"),
        None => message.to_owned(),
    }
}

/// Path of the innermost field whose key or value covers byte `offset`, e.g.
/// `route[0] (mysql).connect_timeout`, for errors serde reports with only a span. (A
/// table's own span is only its header, so tables are searched by their contents.)
pub(super) fn path_at(root: &DeTable<'_>, offset: usize) -> String {
    find(root, offset).unwrap_or_default()
}

fn find(table: &DeTable<'_>, offset: usize) -> Option<String> {
    let covers = |span: Range<usize>| span.contains(&offset) || span.start == offset;
    for (key, value) in table {
        let name: &str = key.get_ref();
        let here = covers(key.span()) || covers(value.span());
        match value.get_ref() {
            DeValue::Table(inner) => {
                if let Some(rest) = find(inner, offset) {
                    return Some(join(name, &rest));
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let (label, inner) = match item.get_ref() {
                        DeValue::Table(inner) => (entry_label(name, i, inner), Some(inner)),
                        _ => (format!("{name}[{i}]"), None),
                    };
                    if let Some(rest) = inner.and_then(|inner| find(inner, offset)) {
                        return Some(join(&label, &rest));
                    }
                    if covers(item.span()) {
                        return Some(label);
                    }
                }
            }
            _ => {}
        }
        if here {
            return Some(name.to_owned());
        }
    }
    None
}

/// Takes out of `value` the innermost key whose key or value covers byte `offset`;
/// `false` when there is none (the offset is a table's header: a missing field).
pub(super) fn remove_at(value: &mut DeValue<'_>, offset: usize) -> bool {
    let DeValue::Table(table) = value else { return false };
    for (_, inner) in table.iter_mut() {
        if remove_at(inner.get_mut(), offset) {
            return true;
        }
    }
    let covers = |span: Range<usize>| span.contains(&offset) || span.start == offset;
    let hit = table.iter().find(|(k, v)| covers(k.span()) || covers(v.span())).map(|(k, _)| k.get_ref().to_string());
    match hit {
        Some(key) => table.remove(key.as_str()).is_some(),
        None => false,
    }
}

/// The field names a derived `Deserialize` struct accepts (renames applied), read from
/// the list serde's derive hands to `deserialize_struct`.
pub(super) fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Err(Captured(Some(fields))) => fields,
        _ => &[],
    }
}

/// A deserializer that only records the field list of the struct asked for.
struct FieldNames;

#[derive(Debug)]
struct Captured(Option<&'static [&'static str]>);

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names captured")
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Captured(None)
    }
}

impl<'de> de::Deserializer<'de> for FieldNames {
    type Error = Captured;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
        Err(Captured(None))
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], _: V) -> Result<V::Value, Captured> {
        Err(Captured(Some(fields)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
        newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> serde_spanned::Spanned<DeTable<'_>> {
        DeTable::parse(text).unwrap()
    }

    #[test]
    fn field_lists_come_from_serde() {
        assert_eq!(fields_of::<TcpKeepalive>(), ["time", "interval", "probes"]);
        let listener = fields_of::<RawListener>();
        for field in ["name", "address", "tls", "route", "default_route", "handshake_timeout", "peer_auth", "max_connections", "tcp_keepalive"] {
            assert!(listener.contains(&field), "{field} missing from {listener:?}");
        }
        for table in [
            Table::Listener,
            Table::Route,
            Table::Tls,
            Table::Keepalive,
            Table::Resolver,
            Table::Process,
            Table::Admin,
            Table::Health,
            Table::Metrics,
            Table::Telemetry,
        ] {
            assert!(!table.fields().is_empty(), "{table:?} is not a struct serde derives");
        }
        // Every field that holds a table is one serde knows.
        for table in [Table::Root, Table::Listener, Table::Route] {
            for field in [
                "listener",
                "route",
                "resolver",
                "process",
                "admin",
                "health",
                "metrics",
                "telemetry",
                "tls",
                "upstream_tls",
                "downstream_tls",
                "tcp_keepalive",
            ] {
                if table.child(field).is_some() {
                    assert!(table.fields().contains(&field), "{table:?}.{field}");
                }
            }
        }
    }

    #[test]
    fn every_table_kind_is_walked() {
        let text = r#"
bogus = 1
[resolver]
nameserver = []
[process]
drain = "1s"
[admin]
adress = "127.0.0.1:1"
[telemetry]
endpoint = "x"
[[listener]]
name = "l"
tls = { mood = "mutual" }
tcp_keepalive = { tme = "1s" }
[[route]]
name = "r"
upstream_tls = { sny = "x" }
downstream_tls = { kee = "x" }
"#;
        let root = doc(text);
        let mut fields: Vec<String> = unknown_fields(root.get_ref()).into_iter().map(|u| u.field).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "admin.adress",
                "bogus",
                "listener[0] (l).tcp_keepalive.tme",
                "listener[0] (l).tls.mood",
                "process.drain",
                "resolver.nameserver",
                "route[0] (r).downstream_tls.kee",
                "route[0] (r).upstream_tls.sny",
                "telemetry.endpoint",
            ]
        );
    }

    #[test]
    fn unknown_fields_carry_their_entry_and_a_suggestion() {
        let text = "[[listener]]\nname = \"a\"\nrout = \"x\"\n";
        let root = doc(text);
        let unknown = unknown_fields(root.get_ref());
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[0].field, "listener[0] (a).rout");
        assert!(unknown[0].message.starts_with("unknown field `rout`: did you mean `route`?"), "{}", unknown[0].message);
        assert_eq!(&text[unknown[0].span.clone()], "rout");
        assert_eq!(unknown[0].entry.as_ref().map(|e| e.start), Some(0));
    }

    #[test]
    fn suggestions() {
        let route = fields_of::<RawRoute>();
        assert_eq!(did_you_mean("upstrem", route), Some("upstream"));
        assert_eq!(did_you_mean("upstreamTls", route), Some("upstream_tls"));
        assert_eq!(did_you_mean("connect-timeout", route), Some("connect_timeout"));
        assert_eq!(did_you_mean("subjectAltNames", fields_of::<RawTls>()), Some("subject_alt_names"));
        assert_eq!(did_you_mean("cipher", fields_of::<RawTls>()), Some("cipher_suites"));
        assert_eq!(did_you_mean("mood", fields_of::<RawTls>()), Some("mode"));
        assert_eq!(did_you_mean("weight", route), None);
        assert_eq!(did_you_mean("tls", route), None);
        assert_eq!(did_you_mean("", route), None);
        assert_eq!(
            suggest_variant("unknown variant `mutal`, expected one of `disable`, `simple`, `mutual`"),
            "unknown variant `mutal`, expected one of `disable`, `simple`, `mutual`: did you mean `mutual`?"
        );
        assert_eq!(suggest_variant("unknown variant `x`, expected `a` or `b`"), "unknown variant `x`, expected `a` or `b`");
        assert_eq!(suggest_variant("invalid type: integer `5`"), "invalid type: integer `5`");
    }

    #[test]
    fn a_bad_value_is_taken_out_innermost_first() {
        let text = "[[listener]]\nname = \"a\"\ntls = { mode = 3, dir = \"/d\" }\nmax_connections = \"x\"\n";
        let root = doc(text);
        let DeValue::Array(items) = root.get_ref().get("listener").unwrap().get_ref() else { panic!() };
        let mut entry = items[0].clone();
        assert!(remove_at(entry.get_mut(), text.find('3').unwrap()));
        assert!(remove_at(entry.get_mut(), text.find("\"x\"").unwrap()));
        assert!(!remove_at(entry.get_mut(), 0), "a header names no value");
        let DeValue::Table(table) = entry.get_ref() else { panic!() };
        let DeValue::Table(tls) = table.get("tls").unwrap().get_ref() else { panic!() };
        assert!(tls.get("mode").is_none() && tls.get("dir").is_some());
        assert!(table.get("max_connections").is_none() && table.get("name").is_some());
    }

    #[test]
    fn paths_of_offsets() {
        let text = "[[listener]]\nname = \"a\"\n[[route]]\nname = \"r\"\nconnect_timeout = 5\ntls = { mode = 3 }\n[admin]\naddress = 1\n";
        let root = doc(text);
        let at = |needle: &str| path_at(root.get_ref(), text.find(needle).unwrap());
        assert_eq!(at("5\n"), "route[0] (r).connect_timeout");
        assert_eq!(at("3 }"), "route[0] (r).tls.mode");
        assert_eq!(at("1\n"), "admin.address");
        assert_eq!(at("[[route]]"), "route[0] (r)");
    }
}
