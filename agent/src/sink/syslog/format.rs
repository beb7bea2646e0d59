//! Syslog message headers: RFC 5424 and RFC 3164 (BSD), and RFC 6587 octet counting.

use std::io::Write as _;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::event::Level;

/// Header layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`
    Rfc5424,
    /// `<PRI>Mmm dd hh:mm:ss HOSTNAME APP-NAME[PROCID]: MSG`
    Rfc3164,
}

/// Facility names and codes (RFC 5424 table 1, with the names syslog daemons use).
pub const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("security", 13),
    ("console", 14),
    ("solaris-cron", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// `local0`, `daemon`, ... or a number 0-23.
pub fn parse_facility(s: &str) -> Result<u8, String> {
    let t = s.trim().to_ascii_lowercase();
    if let Some((_, code)) = FACILITIES.iter().find(|(name, _)| *name == t) {
        return Ok(*code);
    }
    t.parse::<u8>().ok().filter(|n| *n <= 23).ok_or_else(|| {
        format!(
            "unknown facility {s:?} (a number 0-23 or one of: {})",
            FACILITIES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Syslog severity of an event level: info 6, warning 4, error 3, critical 2.
pub const fn severity(level: Level) -> u8 {
    match level {
        Level::Info => 6,
        Level::Warning => 4,
        Level::Error => 3,
        Level::Critical => 2,
    }
}

/// The fixed parts of every header (sanitised once at open).
#[derive(Debug, Clone)]
pub struct Header {
    pub format: Format,
    pub facility: u8,
    hostname: String,
    app_name: String,
    procid: String,
}

impl Header {
    pub fn new(format: Format, facility: u8, hostname: &str, app_name: &str, pid: u32) -> Header {
        Header {
            format,
            facility,
            // RFC 5424 field limits; RFC 3164 keeps the tag to 32 characters.
            hostname: token(hostname, 255),
            app_name: token(app_name, if format == Format::Rfc3164 { 32 } else { 48 }),
            procid: pid.to_string(),
        }
    }

    /// Appends the header of one message (everything before MSG, its trailing space
    /// included) to `out`. `sequence`: RFC 5424's `[meta sequenceId="N"]` as
    /// STRUCTURED-DATA (`-` without it); RFC 3164 has no structured data.
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        level: Level,
        timestamp: &str,
        msgid: &str,
        sequence: Option<u32>,
    ) {
        let pri = u16::from(self.facility) * 8 + u16::from(severity(level));
        match self.format {
            Format::Rfc5424 => {
                let ts = if is_rfc3339(timestamp) {
                    timestamp
                } else {
                    "-"
                };
                let _ = write!(
                    out,
                    "<{pri}>1 {ts} {} {} {} {} ",
                    self.hostname,
                    self.app_name,
                    self.procid,
                    token(msgid, 32)
                );
                match sequence {
                    Some(n) => {
                        let _ = write!(out, "[meta sequenceId=\"{n}\"] ");
                    }
                    None => out.extend_from_slice(b"- "),
                }
            }
            Format::Rfc3164 => {
                let _ = write!(
                    out,
                    "<{pri}>{} {} {}[{}]: ",
                    bsd_timestamp(timestamp),
                    self.hostname,
                    self.app_name,
                    self.procid
                );
            }
        }
    }
}

/// A header field: printable US-ASCII without spaces, at most `max` characters, `-` when
/// empty (RFC 5424's NILVALUE).
fn token(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if t.is_empty() {
        "-".to_string()
    } else {
        t
    }
}

/// The event's `@timestamp` is RFC 3339 UTC with microseconds, which RFC 5424 takes as it
/// is (TIME-SECFRAC has up to six digits). Anything else becomes NILVALUE.
fn is_rfc3339(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() >= 20
        && b.len() <= 32
        && b[4] == b'-'
        && b[10] == b'T'
        && OffsetDateTime::parse(ts, &Rfc3339).is_ok()
}

/// `Mmm dd hh:mm:ss` (day padded with a space) of the event's time in UTC, or of now if
/// the event's time does not parse (RFC 3164 has no empty timestamp).
pub fn bsd_timestamp(ts: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = OffsetDateTime::parse(ts, &Rfc3339)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .to_offset(time::UtcOffset::UTC);
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// RFC 5424 7.3.1: sequenceId runs from 1 to 2147483647, then starts again at 1.
pub const SEQUENCE_MAX: u32 = 2_147_483_647;

/// The sequenceId after `n`.
pub const fn next_sequence(n: u32) -> u32 {
    if n >= SEQUENCE_MAX {
        1
    } else {
        n + 1
    }
}

/// RFC 6587 3.4.2 non-transparent framing: `MSG LF`, for receivers that do not take
/// octet counting. Safe here because MSG is a JSON line, which has no raw newline.
pub fn newline_framed(mut msg: Vec<u8>) -> Vec<u8> {
    msg.push(b'\n');
    msg
}

/// RFC 6587 octet counting (also RFC 5425 for TLS): `LEN SP MSG`.
pub fn octet_counted(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 8);
    let _ = write!(out, "{} ", msg.len());
    out.extend_from_slice(msg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2026-11-02T10:00:05.536897Z";

    fn head(h: &Header, level: Level, ts: &str, msgid: &str) -> String {
        let mut v = Vec::new();
        h.write(&mut v, level, ts, msgid, None);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn rfc5424_header_has_pri_version_timestamp_host_app_pid_msgid_and_nil_sd_without_sequence() {
        let h = Header::new(Format::Rfc5424, 16, "cs-probe-1", "hbwatch", 4242);
        assert_eq!(
            head(&h, Level::Warning, TS, "heartbeat.gap"),
            "<132>1 2026-11-02T10:00:05.536897Z cs-probe-1 hbwatch 4242 heartbeat.gap - "
        );
        // local0 (16) * 8 + severity.
        assert!(head(&h, Level::Info, TS, "a").starts_with("<134>1 "));
        assert!(head(&h, Level::Error, TS, "a").starts_with("<131>1 "));
        assert!(head(&h, Level::Critical, TS, "a").starts_with("<130>1 "));
        let daemon = Header::new(Format::Rfc5424, 3, "h", "hbwatch", 1);
        assert!(head(&daemon, Level::Critical, TS, "a").starts_with("<26>1 "));
    }

    #[test]
    fn sequence_id_is_structured_data_and_wraps_to_one() {
        let h = Header::new(Format::Rfc5424, 16, "cs-probe-1", "hbwatch", 4242);
        let mut v = Vec::new();
        h.write(&mut v, Level::Info, TS, "peer.up", Some(7));
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "<134>1 2026-11-02T10:00:05.536897Z cs-probe-1 hbwatch 4242 peer.up \
             [meta sequenceId=\"7\"] "
        );
        assert_eq!(next_sequence(1), 2);
        assert_eq!(next_sequence(SEQUENCE_MAX - 1), SEQUENCE_MAX);
        assert_eq!(next_sequence(SEQUENCE_MAX), 1);
        // RFC 3164 has nowhere to put it.
        let bsd = Header::new(Format::Rfc3164, 16, "cs-probe-1", "hbwatch", 4242);
        let mut v = Vec::new();
        bsd.write(&mut v, Level::Info, TS, "peer.up", Some(7));
        assert!(!String::from_utf8(v).unwrap().contains("sequenceId"));
    }

    #[test]
    fn header_fields_are_sanitised_and_bad_timestamps_become_nil() {
        let h = Header::new(Format::Rfc5424, 16, "my host\u{e9}", "", 7);
        assert_eq!(
            head(&h, Level::Info, "yesterday", &"x".repeat(40)),
            format!("<134>1 - my_host_ - 7 {} - ", "x".repeat(32))
        );
    }

    #[test]
    fn rfc3164_header_has_bsd_timestamp_in_utc_and_tag_with_pid() {
        let h = Header::new(Format::Rfc3164, 16, "cs-probe-1", "hbwatch", 4242);
        assert_eq!(
            head(&h, Level::Critical, TS, "peer.down"),
            "<130>Nov  2 10:00:05 cs-probe-1 hbwatch[4242]: "
        );
        assert_eq!(
            bsd_timestamp("2026-12-24T23:59:59.999999+02:00"),
            "Dec 24 21:59:59"
        );
    }

    #[test]
    fn facilities_by_name_or_number() {
        assert_eq!(parse_facility("local0"), Ok(16));
        assert_eq!(parse_facility("LOCAL7"), Ok(23));
        assert_eq!(parse_facility("daemon"), Ok(3));
        assert_eq!(parse_facility("0"), Ok(0));
        assert!(parse_facility("24").is_err());
        assert!(parse_facility("local8").unwrap_err().contains("local0"));
    }

    #[test]
    fn octet_counting_counts_bytes_not_characters() {
        assert_eq!(
            octet_counted("<134>1 - - - - - - é".as_bytes()),
            "21 <134>1 - - - - - - é".as_bytes()
        );
    }
}
