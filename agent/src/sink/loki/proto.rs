//! What goes over the wire to Loki: `logproto.PushRequest` (Loki's `pkg/push/push.proto`,
//! declared here with `prost` derives, no protoc), snappy block-compressed, or the JSON
//! form of the same request. A [`PushRequest`] is also the in-memory batch and, compressed,
//! the on-disk spool format.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost::Message;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: one label set and its entries.
#[derive(Clone, PartialEq, Message)]
pub struct StreamAdapter {
    /// The label set in Prometheus text form: `{host="probe-1", job="hbwatch"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Left 0: Loki computes it.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`: one log line.
#[derive(Clone, PartialEq, Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`: one structured-metadata pair.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    pub fn from_unix_nanos(ns: i128) -> Timestamp {
        Timestamp {
            seconds: ns.div_euclid(1_000_000_000) as i64,
            nanos: ns.rem_euclid(1_000_000_000) as i32,
        }
    }

    pub fn unix_nanos(&self) -> i128 {
        self.seconds as i128 * 1_000_000_000 + self.nanos as i128
    }
}

/// How a batch is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`, snappy block format (Loki's native push format).
    Protobuf,
    /// `application/json`: `{"streams":[{"stream":{..},"values":[["ns","line",{..}]]}]}`.
    Json,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

impl PushRequest {
    /// Protobuf, snappy block-compressed: the request body Loki expects for
    /// `application/x-protobuf`, and the spool file format.
    pub fn to_snappy(&self) -> Vec<u8> {
        // Compression of a buffer we built cannot fail short of exceeding snappy's 4 GiB limit,
        // which batch and queue bounds rule out; an empty body then makes Loki answer 400.
        snap::raw::Encoder::new()
            .compress_vec(&self.encode_to_vec())
            .unwrap_or_default()
    }

    pub fn from_snappy(body: &[u8]) -> Result<PushRequest, String> {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(body)
            .map_err(|e| format!("not snappy block data: {e}"))?;
        PushRequest::decode(raw.as_slice()).map_err(|e| format!("not a PushRequest: {e}"))
    }

    /// The JSON push body.
    pub fn to_json(&self) -> Result<Vec<u8>, String> {
        let streams = self
            .streams
            .iter()
            .map(|s| {
                Ok(JsonStream {
                    stream: parse_labels(&s.labels)?.into_iter().collect(),
                    values: &s.entries,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        serde_json::to_vec(&JsonPush { streams }).map_err(|e| e.to_string())
    }

    /// The body for `encoding`.
    pub fn body(&self, encoding: Encoding) -> Result<Vec<u8>, String> {
        match encoding {
            Encoding::Protobuf => Ok(self.to_snappy()),
            Encoding::Json => self.to_json(),
        }
    }

    pub fn entries(&self) -> usize {
        self.streams.iter().map(|s| s.entries.len()).sum()
    }
}

#[derive(Serialize)]
struct JsonPush<'a> {
    streams: Vec<JsonStream<'a>>,
}

#[derive(Serialize)]
struct JsonStream<'a> {
    stream: BTreeMap<String, String>,
    #[serde(serialize_with = "json_values")]
    values: &'a [EntryAdapter],
}

fn json_values<S: Serializer>(entries: &&[EntryAdapter], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(entries.len()))?;
    for e in entries.iter() {
        seq.serialize_element(&JsonEntry(e))?;
    }
    seq.end()
}

/// `["<unix ns>", "<line>"]`, or with a third element `{metadata}` when there is any
/// (older Loki versions only know the two-element form).
struct JsonEntry<'a>(&'a EntryAdapter);

impl Serialize for JsonEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let md = &e.structured_metadata;
        let mut seq = s.serialize_seq(Some(if md.is_empty() { 2 } else { 3 }))?;
        let ns = e.timestamp.unwrap_or_default().unix_nanos();
        seq.serialize_element(&ns.to_string())?;
        seq.serialize_element(&e.line)?;
        if !md.is_empty() {
            seq.serialize_element(&JsonMetadata(md))?;
        }
        seq.end()
    }
}

struct JsonMetadata<'a>(&'a [LabelPairAdapter]);

impl Serialize for JsonMetadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for p in self.0 {
            map.serialize_entry(&p.name, &p.value)?;
        }
        map.end()
    }
}

/// A valid Prometheus/Loki label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `{a="1", b="x\"y"}` from pairs already sorted by name. Values are quoted the way Go's
/// `strconv.Quote` does for what Loki's label parser unquotes.
pub fn format_labels(pairs: &[(String, String)]) -> String {
    let mut s = String::with_capacity(16 + pairs.len() * 24);
    s.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                '\r' => s.push_str("\\r"),
                '\t' => s.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(s, "\\u{:04x}", c as u32);
                }
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// The pairs of a label set written by [`format_labels`] (spooled batches sent as JSON).
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let bad = |why: &str| format!("label set {s:?}: {why}");
    let inner = s
        .trim()
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| bad("not in braces"))?;
    let mut out = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(|| bad("name without value"))?;
        let name = rest[..eq].trim();
        if !valid_label_name(name) {
            return Err(bad("invalid label name"));
        }
        let mut chars = rest[eq + 1..].trim_start().char_indices();
        let after_eq = rest[eq + 1..].trim_start();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(bad("value not quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some('u') => {
                        let hex: String = (0..4)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let c = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| bad("bad \\u escape"))?;
                        value.push(c);
                    }
                    _ => return Err(bad("unknown escape")),
                },
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| bad("unterminated value"))?;
        out.push((name.to_string(), value));
        rest = after_eq[end..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(bad("expected ',' between labels"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PushRequest {
        PushRequest {
            streams: vec![StreamAdapter {
                labels: format_labels(&[
                    ("host".into(), "probe \"1\"\\\n\tx\u{1}é".into()),
                    ("job".into(), "hbwatch".into()),
                ]),
                entries: vec![
                    EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(1_795_341_605_536_897_000)),
                        line: r#"{"a":1}"#.into(),
                        structured_metadata: vec![LabelPairAdapter {
                            name: "source_ip".into(),
                            value: "10.0.0.1".into(),
                        }],
                    },
                    EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(-1)),
                        line: "two".into(),
                        structured_metadata: vec![],
                    },
                ],
                hash: 0,
            }],
        }
    }

    #[test]
    fn labels_round_trip_with_escapes() {
        let pairs = vec![
            ("host".to_string(), "probe \"1\"\\\n\tx\u{1}é".to_string()),
            ("job".to_string(), "hbwatch".to_string()),
        ];
        let s = format_labels(&pairs);
        assert_eq!(
            s,
            "{host=\"probe \\\"1\\\"\\\\\\n\\tx\\u0001é\", job=\"hbwatch\"}"
        );
        assert_eq!(parse_labels(&s).unwrap(), pairs);
        assert_eq!(parse_labels("{}").unwrap(), vec![]);
        assert_eq!(
            parse_labels("{a=\"1\",b = \"2\"}").unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        for bad in [
            "a=\"1\"",
            "{a=1}",
            "{1a=\"x\"}",
            "{a=\"x}",
            "{a=\"x\" b=\"y\"}",
        ] {
            assert!(parse_labels(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_names() {
        assert!(valid_label_name("job"));
        assert!(valid_label_name("_x9"));
        assert!(!valid_label_name("9x"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name(""));
    }

    #[test]
    fn snappy_protobuf_round_trip() {
        let req = sample();
        let body = req.to_snappy();
        // Snappy block format starts with the uncompressed length as a varint, no stream
        // identifier chunk (that would be the framed format, which Loki does not read).
        assert_ne!(body[0], 0xff);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(raw, req.encode_to_vec());
        assert_eq!(PushRequest::from_snappy(&body).unwrap(), req);
        assert!(PushRequest::from_snappy(b"garbage").is_err());
    }

    #[test]
    fn json_body_is_loki_push_json() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_json().unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"streams": [{
                "stream": {"host": "probe \"1\"\\\n\tx\u{1}é", "job": "hbwatch"},
                "values": [
                    ["1795341605536897000", "{\"a\":1}", {"source_ip": "10.0.0.1"}],
                    ["-1", "two"]
                ]
            }]})
        );
    }
}
