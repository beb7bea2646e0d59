//! Every field an event can carry, with its Elasticsearch type: the one list behind the
//! index template (`hbwatch schema`, packaging/elasticsearch/) and the ECS conformance
//! test (agent/tests/ecs.rs), which checks the ECS fields here against Elastic's own
//! definitions and every event the agent writes against this list.

use serde_json::{json, Map, Value};

/// How a field is indexed. ECS names the types; `Object` is an open map of counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Date,
    Keyword,
    Long,
    Ip,
    Boolean,
    /// ECS's type for `message`; OpenSearch has none, `text` there.
    MatchOnlyText,
    /// A map whose keys grow (counters per name): every value a long.
    CounterMap,
    /// Fractional numbers (milliseconds of `path.*`).
    Double,
}

impl FieldType {
    /// The type's name in ECS's definitions (`CounterMap`: `object`).
    pub const fn ecs_name(self) -> &'static str {
        match self {
            FieldType::Date => "date",
            FieldType::Keyword => "keyword",
            FieldType::Long => "long",
            FieldType::Ip => "ip",
            FieldType::Boolean => "boolean",
            FieldType::MatchOnlyText => "match_only_text",
            FieldType::CounterMap => "object",
            FieldType::Double => "double",
        }
    }
}

/// One field: its dotted name and type. Arrays take the element's type (ECS has no
/// array type); `array` says the field holds one.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    pub array: bool,
}

const fn f(name: &'static str, ty: FieldType) -> Field {
    Field {
        name,
        ty,
        array: false,
    }
}

const fn list(name: &'static str, ty: FieldType) -> Field {
    Field {
        name,
        ty,
        array: true,
    }
}

use FieldType::*;

/// Every field of docs/EVENTS.md. ECS fields first (their types are ECS's, checked),
/// then `heartbeat.*` and `sip.*` (Packetbeat's types where it has the name, checked).
pub const FIELDS: &[Field] = &[
    f("@timestamp", Date),
    f("ecs.version", Keyword),
    f("event.kind", Keyword),
    list("event.category", Keyword),
    list("event.type", Keyword),
    f("event.action", Keyword),
    f("event.dataset", Keyword),
    f("event.module", Keyword),
    f("event.outcome", Keyword),
    f("event.severity", Long),
    f("log.level", Keyword),
    f("message", MatchOnlyText),
    f("network.protocol", Keyword),
    f("network.transport", Keyword),
    f("network.type", Keyword),
    f("network.iana_number", Keyword),
    f("network.community_id", Keyword),
    f("source.ip", Ip),
    f("source.port", Long),
    f("destination.ip", Ip),
    f("destination.port", Long),
    list("related.ip", Ip),
    f("observer.hostname", Keyword),
    f("observer.type", Keyword),
    f("observer.vendor", Keyword),
    f("observer.product", Keyword),
    f("observer.version", Keyword),
    f("observer.ingress.interface.name", Keyword),
    f("heartbeat.seq", Long),
    f("heartbeat.expected_seq", Long),
    f("heartbeat.last_seq", Long),
    f("heartbeat.previous_seq", Long),
    f("heartbeat.lost", Long),
    f("heartbeat.attempt", Long),
    f("heartbeat.timeout_ms", Long),
    f("heartbeat.interval_ms", Long),
    f("heartbeat.expected_interval_ms", Long),
    f("heartbeat.missed", Long),
    f("heartbeat.silence_ms", Long),
    f("heartbeat.downtime_ms", Long),
    f("heartbeat.diagnosis", Keyword),
    list("heartbeat.evidence", Keyword),
    f("heartbeat.count", Long),
    f("heartbeat.rtt_us.min", Long),
    f("heartbeat.rtt_us.avg", Long),
    f("heartbeat.rtt_us.max", Long),
    f("heartbeat.period_ms", Long),
    f("heartbeat.duplicates", Long),
    f("heartbeat.dscp", Long),
    f("heartbeat.expected_dscp", Long),
    f("heartbeat.ttl", Long),
    f("heartbeat.expected_ttl", Long),
    f("heartbeat.direction", Keyword),
    f("heartbeat.reset", Boolean),
    f("heartbeat.closed_by", Keyword),
    f("heartbeat.where", Keyword),
    list("heartbeat.interfaces.name", Keyword),
    list("heartbeat.interfaces.mode", Keyword),
    f("heartbeat.config_digest", Keyword),
    f("heartbeat.counters", CounterMap),
    f("heartbeat.folded", CounterMap),
    f("path.from", Keyword),
    f("path.to", Keyword),
    f("path.reason", Keyword),
    f("path.matched", Long),
    f("path.unmatched", Long),
    f("path.outside_window", Long),
    f("path.delay_ms.min", Double),
    f("path.delay_ms.avg", Double),
    f("path.delay_ms.max", Double),
    f("path.clock_offset_ms", Double),
    f("path.clock_offset_samples", Long),
    f("path.clock_offset_spread_ms", Double),
    f("path.clock_offset_method", Keyword),
    f("sip.call_id", Keyword),
    f("sip.aor", Keyword),
    f("sip.device", Keyword),
    f("sip.method", Keyword),
    // Packetbeat indexes the numbers below as keywords: so does this template, or an
    // index holding both would break. The JSON carries numbers; keywords take them.
    f("sip.cseq.code", Keyword),
    f("sip.cseq.method", Keyword),
    f("sip.code", Keyword),
    f("sip.status", Keyword),
    f("sip.expires", Long),
    f("sip.credentials_rejected", Boolean),
    f("sip.rejections", Long),
];

/// The field called `name` (dotted), if events have it.
pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

/// The field list of docs/EVENTS.md ("Every field"), as a Markdown table:
/// `hbwatch schema --markdown`. A test keeps the document equal to it.
pub fn markdown() -> String {
    let mut t = String::from("| field | type |\n|---|---|\n");
    for f in FIELDS {
        let array = if f.array { ", array" } else { "" };
        t += &format!("| `{}` | {}{array} |\n", f.name, f.ty.ecs_name());
    }
    t
}

/// Which search engine a template is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Elasticsearch,
    Opensearch,
}

fn mapping(ty: FieldType, engine: Engine) -> Value {
    match ty {
        Keyword => json!({"type": "keyword", "ignore_above": 1024}),
        MatchOnlyText if engine == Engine::Opensearch => json!({"type": "text"}),
        CounterMap => json!({"type": "object", "dynamic": true}),
        other => json!({"type": other.ecs_name()}),
    }
}

/// A composable index template (`PUT _index_template/hbwatch`, the same API in
/// Elasticsearch 7.8+ and OpenSearch 1+) for `hbwatch-*` indices: every field mapped,
/// counters' values as longs, anything new mapped dynamically.
pub fn index_template(engine: Engine) -> Value {
    let mut root = Map::new();
    for field in FIELDS {
        let mut at = &mut root;
        let mut parts = field.name.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                at.insert(part.to_string(), mapping(field.ty, engine));
                break;
            }
            let node = at
                .entry(part.to_string())
                .or_insert_with(|| json!({"properties": {}}));
            at = node["properties"].as_object_mut().expect("object node");
        }
    }
    json!({
        "index_patterns": ["hbwatch-*"],
        "priority": 200,
        "_meta": {
            "description": "hbwatch events (docs/EVENTS.md), generated by `hbwatch schema`",
            "ecs_version": crate::event::ECS_VERSION,
            "contract_version": crate::event::CONTRACT_VERSION,
        },
        "template": {
            "mappings": {
                // One pattern each: OpenSearch and Elasticsearch before 8.9 take no list.
                "dynamic_templates": [
                    {"counters_are_longs": {
                        "path_match": "heartbeat.counters.*",
                        "mapping": {"type": "long"}
                    }},
                    {"folded_are_longs": {
                        "path_match": "heartbeat.folded.*",
                        "mapping": {"type": "long"}
                    }}
                ],
                "properties": root,
            }
        }
    })
}

/// The dotted names and values of an event's leaves, arrays kept whole (the index
/// sees each field once, whatever its values).
pub fn leaves(ev: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(prefix: &str, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        match v {
            // A map field (counters): the map is the value.
            Value::Object(_) if field(prefix).is_some() => out.push((prefix.to_string(), v)),
            Value::Object(m) => {
                for (k, v) in m {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, v, out);
                }
            }
            Value::Array(items) if items.iter().any(Value::is_object) => {
                for item in items {
                    walk(prefix, item, out);
                }
            }
            _ => out.push((prefix.to_string(), v)),
        }
    }
    let mut out = Vec::new();
    walk("", ev, &mut out);
    out
}

/// What is wrong with one event against [`FIELDS`]: a field not in the list, or a
/// value its type does not take.
pub fn violations(ev: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in leaves(ev) {
        let Some(field) = field(&name) else {
            out.push(format!("{name}: not a documented field"));
            continue;
        };
        let values: Vec<&Value> = match value {
            Value::Array(items) => {
                if !field.array {
                    out.push(format!("{name}: an array where one value is expected"));
                }
                items.iter().collect()
            }
            v => vec![v],
        };
        for v in values {
            if let Some(why) = takes(field, v) {
                out.push(format!("{name}: {v} {why}"));
            }
        }
    }
    out
}

fn takes(field: &Field, v: &Value) -> Option<&'static str> {
    let ok = match field.ty {
        Date => v.as_str().is_some_and(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        }),
        // Numbers only where Packetbeat keeps numbers as keywords (sip.code...).
        Keyword => v.is_string() || (v.is_u64() && field.name.starts_with("sip.")),
        Long => v.is_i64() || v.is_u64(),
        Double => v.is_number(),
        Ip => v
            .as_str()
            .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
        Boolean => v.is_boolean(),
        MatchOnlyText => v.is_string(),
        CounterMap => v
            .as_object()
            .is_some_and(|m| m.values().all(|c| c.is_u64())),
    };
    (!ok).then_some(match field.ty {
        Date => "is not an RFC 3339 date",
        Keyword | MatchOnlyText => "is not a string",
        Long => "is not an integer",
        Double => "is not a number",
        Ip => "is not an IP address",
        Boolean => "is not a boolean",
        CounterMap => "is not a map of counts",
    })
}

/// Elastic's ECS field definitions and Packetbeat's `sip.*` fields, as vendored for
/// the conformance tests (agent/tests/data/ecs/: `ecs_flat.json`, `packetbeat_sip.json`).
pub struct Reference {
    pub ecs_version: String,
    ecs: Map<String, Value>,
    packetbeat: Map<String, Value>,
}

impl Reference {
    /// Loads the two files from `dir`.
    pub fn load(dir: &std::path::Path) -> anyhow::Result<Reference> {
        let read = |name: &str| -> anyhow::Result<String> {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        };
        Reference::parse(&read("ecs_flat.json")?, &read("packetbeat_sip.json")?)
    }

    /// From the two files' texts (tests that run where the sources are not: the VM).
    pub fn parse(ecs_flat: &str, packetbeat_sip: &str) -> anyhow::Result<Reference> {
        let ecs: Value = serde_json::from_str(ecs_flat)?;
        let pb: Value = serde_json::from_str(packetbeat_sip)?;
        let fields = |v: &Value| v["fields"].as_object().cloned().unwrap_or_default();
        Ok(Reference {
            ecs_version: ecs["ecs_version"].as_str().unwrap_or("?").to_string(),
            ecs: fields(&ecs),
            packetbeat: fields(&pb),
        })
    }

    /// What [`FIELDS`] gets wrong against ECS and Packetbeat: an ECS field with another
    /// type or array-ness, a field in an ECS field set that ECS does not define, a custom
    /// field that is ECS's or Packetbeat's under another type.
    pub fn field_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let sets: std::collections::BTreeSet<&str> = self
            .ecs
            .keys()
            .map(|k| k.split('.').next().unwrap_or(k))
            .collect();
        for field in FIELDS {
            let top = field.name.split('.').next().unwrap_or(field.name);
            match self.ecs.get(field.name) {
                Some(def) => {
                    if def["type"].as_str() != Some(field.ty.ecs_name()) {
                        out.push(format!(
                            "{}: {} here, {} in ECS",
                            field.name,
                            field.ty.ecs_name(),
                            def["type"]
                        ));
                    }
                    if def["array"].as_bool().unwrap_or(false) != field.array {
                        out.push(format!("{}: array-ness differs from ECS", field.name));
                    }
                }
                None if sets.contains(top) || field.name.contains('@') => out.push(format!(
                    "{}: in ECS's {top}.* but not an ECS field",
                    field.name
                )),
                None => {
                    if !matches!(top, "heartbeat" | "sip" | "path") {
                        out.push(format!(
                            "{}: custom field outside heartbeat.*/sip.*/path.*",
                            field.name
                        ));
                    }
                }
            }
            if let Some(def) = self.packetbeat.get(field.name) {
                if def.as_str() != Some(field.ty.ecs_name()) {
                    out.push(format!(
                        "{}: {} here, {def} in Packetbeat",
                        field.name,
                        field.ty.ecs_name()
                    ));
                }
            }
            // A Packetbeat object where this is a leaf, or the reverse (v1's sip.cseq).
            let prefix = format!("{}.", field.name);
            if self.packetbeat.keys().any(|k| k.starts_with(&prefix)) {
                out.push(format!("{}: an object in Packetbeat", field.name));
            }
        }
        out
    }

    /// What one event gets wrong: [`violations`], and ECS's allowed values for
    /// `event.kind`, `event.category`, `event.type` (those its category expects) and
    /// `event.outcome`.
    pub fn event_problems(&self, ev: &Value) -> Vec<String> {
        let mut out = violations(ev);
        let allowed = |name: &str| -> Vec<String> {
            self.ecs
                .get(name)
                .and_then(|d| d["allowed"].as_array())
                .map_or(Vec::new(), |a| {
                    a.iter()
                        .map(|v| {
                            v.as_str()
                                .or_else(|| v[0].as_str())
                                .unwrap_or("")
                                .to_string()
                        })
                        .collect()
                })
        };
        let values = |v: &Value| -> Vec<String> {
            match v {
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().unwrap_or("?").to_string())
                    .collect(),
                Value::Null => Vec::new(),
                v => vec![v.as_str().unwrap_or("?").to_string()],
            }
        };
        for name in [
            "event.kind",
            "event.category",
            "event.type",
            "event.outcome",
        ] {
            let ok = allowed(name);
            let (set, key) = name.split_once('.').expect("dotted");
            for v in values(&ev[set][key]) {
                if !ok.contains(&v) {
                    out.push(format!("{name}: {v:?} is not one of ECS's {ok:?}"));
                }
            }
        }
        // event.type values must be among those ECS expects with the category.
        let expected: Vec<String> = self
            .ecs
            .get("event.category")
            .and_then(|d| d["allowed"].as_array())
            .into_iter()
            .flatten()
            .filter(|a| {
                values(&ev["event"]["category"])
                    .iter()
                    .any(|c| Some(c.as_str()) == a[0].as_str())
            })
            .flat_map(|a| values(&a[1]))
            .collect();
        for t in values(&ev["event"]["type"]) {
            if !expected.contains(&t) {
                out.push(format!(
                    "event.type: {t:?} is not expected with event.category {}",
                    ev["event"]["category"]
                ));
            }
        }
        if ev["ecs"]["version"].as_str() != Some(self.ecs_version.as_str()) {
            out.push(format!(
                "ecs.version: {} (definitions: {})",
                ev["ecs"]["version"], self.ecs_version
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/EVENTS.md lists every field of this list, with its type, and no other.
    #[test]
    fn events_md_has_the_current_field_list() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/EVENTS.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let start = "<!-- generated: hbwatch schema --markdown -->\n";
        let from = doc
            .find(start)
            .expect("the generated section's start marker")
            + start.len();
        let to = from
            + doc[from..]
                .find("<!-- end generated -->")
                .expect("its end marker");
        assert_eq!(
            &doc[from..to],
            markdown(),
            "docs/EVENTS.md is stale: replace its field list with `hbwatch schema --markdown`"
        );
    }

    #[test]
    fn the_template_maps_every_field_once_at_its_path() {
        let t = index_template(Engine::Elasticsearch);
        let props = &t["template"]["mappings"]["properties"];
        assert_eq!(props["source"]["properties"]["ip"]["type"], "ip");
        assert_eq!(
            props["sip"]["properties"]["cseq"]["properties"]["code"]["type"],
            "keyword"
        );
        assert_eq!(props["message"]["type"], "match_only_text");
        let os = index_template(Engine::Opensearch);
        assert_eq!(
            os["template"]["mappings"]["properties"]["message"]["type"],
            "text"
        );
        let mut names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FIELDS.len(), "a field listed twice");
    }

    #[test]
    fn violations_name_the_field_and_the_problem() {
        let ev = json!({
            "@timestamp": "2026-11-22T10:00:00.000000Z",
            "source": {"ip": "10.0.0.300", "port": 5060},
            "sip": {"code": 503, "cseq": {"code": 2, "method": "REGISTER"}},
            "event": {"type": ["protocol"], "severity": "high"},
            "heartbeat": {"counters": {"packets": 3}, "interfaces": [{"name": "eth0", "mode": "driver"}]},
            "surprise": 1
        });
        let mut v = violations(&ev);
        v.sort();
        assert_eq!(
            v,
            [
                "event.severity: \"high\" is not an integer",
                "source.ip: \"10.0.0.300\" is not an IP address",
                "surprise: not a documented field",
            ]
        );
    }
}
