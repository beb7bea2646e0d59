//! SIP message text (RFC 3261 §7, §20) from untrusted, possibly truncated captures.
//!
//! Works on bytes: nothing here indexes without a bound check, allocates more than a
//! few bounded strings per message, or assumes UTF-8. Header names are matched
//! case-insensitively and in their compact forms (`i f t m v l`); folded header lines
//! (leading whitespace) continue the previous header. A line the capture cut short
//! (no line end) is ignored: a clipped `Expires: 36` must not read as 36 seconds.

use std::borrow::Cow;

/// Longest string copied out of a message (characters), into state and events.
pub const MAX_TEXT: usize = 256;
/// A folded header stops growing here (the capture is 1024 bytes; TCP headers are
/// bounded by the stream buffer anyway).
const MAX_HEADER_VALUE: usize = 4096;
/// Contacts kept per message: a registrar lists every binding of the AOR in its 200 OK.
const MAX_CONTACTS: usize = 16;
/// Longest method token accepted on a start line.
const MAX_METHOD: usize = 32;
/// Credentials and challenges kept per message (a registrar may offer one per algorithm).
const MAX_AUTH: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Register,
    Options,
    /// Any other method (INVITE, BYE, ... on a TCP connection): parsed to be skipped.
    Other,
}

impl Method {
    fn of(token: &[u8]) -> Method {
        // Method names are case-sensitive (RFC 3261 §7.1).
        match token {
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { status: u16, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq {
    pub number: u32,
    pub method: Method,
}

/// One Contact binding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    /// The URI (inside `<>` when present), bounded.
    pub uri: String,
    pub user: Option<String>,
    /// The `expires=` contact parameter, seconds.
    pub expires: Option<u32>,
    /// Cisco's keepalive to a backup registrar (`;cisco-keep-alive`).
    pub cisco_keep_alive: bool,
    /// `+sip.instance`, unquoted, without `<>`.
    pub instance: Option<String>,
    /// Cisco `+u.sip!devicename.ccm.cisco.com` (e.g. `SEP0024142DDF24`).
    pub device_name: Option<String>,
}

impl Contact {
    /// The device this binding names: Cisco's device-name parameter, the MAC inside a
    /// Cisco `+sip.instance` (`urn:uuid:00000000-0000-0000-0000-<MAC>`), else the
    /// Contact user unless it is a bare UUID.
    pub fn device(&self) -> Option<String> {
        if let Some(name) = self.device_name.as_ref().filter(|n| !n.is_empty()) {
            return Some(name.clone());
        }
        if let Some(mac) = self.instance.as_deref().and_then(cisco_instance_mac) {
            return Some(format!("SEP{mac}"));
        }
        self.user
            .as_ref()
            .filter(|u| !u.is_empty() && !is_uuid(u))
            .cloned()
    }
}

/// Digest credentials a request carried (`Authorization`, `Proxy-Authorization`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// For a proxy (`Proxy-Authorization`), else for the registrar.
    pub proxy: bool,
    pub realm: Option<String>,
}

/// A challenge in a 401/407 (`WWW-Authenticate`, `Proxy-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub proxy: bool,
    pub realm: Option<String>,
    /// `stale=true`: the nonce expired, the credentials were right (RFC 2617 §3.2.1).
    pub stale: bool,
}

/// What a message says, as far as the capture goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub call_id: Option<String>,
    pub cseq: Option<CSeq>,
    /// From URI without parameters.
    pub from_aor: Option<String>,
    /// To URI without parameters: the address of record of a REGISTER.
    pub to_aor: Option<String>,
    pub contacts: Vec<Contact>,
    /// `Contact: *` (remove every binding).
    pub contact_star: bool,
    pub expires: Option<u32>,
    pub content_length: Option<u64>,
    pub credentials: Vec<Credentials>,
    pub challenges: Vec<Challenge>,
    /// Bytes up to and including the blank line that ends the headers; `None` when the
    /// capture ends first (a truncated message).
    pub header_len: Option<usize>,
}

impl Message {
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => self.cseq.map(|c| c.method),
        }
    }

    pub fn is_truncated(&self) -> bool {
        self.header_len.is_none()
    }
}

/// Text copied out of a message: at most [`MAX_TEXT`] characters, valid UTF-8
/// (invalid bytes replaced), surrounding whitespace removed, no control characters.
///
/// Control characters (C0 but tab, DEL, C1) become U+FFFD like invalid bytes, a tab a
/// space: no SIP field the events carry may hold them (RFC 3261 §25), and passed on
/// they reach terminals and log lines raw (JSON escapes C0 but not DEL or C1, which
/// some terminals act on; the pretty format escapes nothing). Found by the malformed
/// suite's hostile SIP text.
pub fn text(b: &[u8]) -> String {
    // Looking at more bytes than 4 per kept character cannot change the result.
    let b = trim(b.get(..MAX_TEXT * 4).unwrap_or(b));
    String::from_utf8_lossy(b)
        .chars()
        .take(MAX_TEXT)
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => char::REPLACEMENT_CHARACTER,
            c => c,
        })
        .collect()
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn find(b: &[u8], needle: u8) -> Option<usize> {
    b.iter().position(|&c| c == needle)
}

/// Leading decimal digits, saturating (RFC 3261 caps Expires at 2^32-1 anyway).
fn number(b: &[u8]) -> Option<u64> {
    let b = trim(b);
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    Some(b.get(..digits)?.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

fn number_u32(b: &[u8]) -> Option<u32> {
    number(b).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// Lines of `buf`: (content without CR LF, offset just past the LF). A last line
/// without LF is not yielded: the capture may have cut it.
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (&'a [u8], usize);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..)?;
        let lf = find(rest, b'\n')?;
        let mut line = rest.get(..lf)?;
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        self.pos += lf + 1;
        Some((line, self.pos))
    }
}

fn lines(buf: &[u8]) -> Lines<'_> {
    Lines { buf, pos: 0 }
}

/// The start line of a request or response, if `line` is one.
pub fn start_line(line: &[u8]) -> Option<StartLine> {
    let line = trim(line);
    if line.len() >= 8 && line.get(..8)?.eq_ignore_ascii_case(b"SIP/2.0 ") {
        let rest = trim(line.get(8..)?);
        let code = rest.get(..3)?;
        if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&c| !is_ws(c)) {
            return None;
        }
        let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&status) {
            return None;
        }
        return Some(StartLine::Response {
            status,
            reason: text(rest.get(3..).unwrap_or_default()),
        });
    }
    let mut parts = line.split(|&c| is_ws(c)).filter(|p| !p.is_empty());
    let method = parts.next()?;
    let uri = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some()
        || method.len() > MAX_METHOD
        || !method.iter().all(|&c| is_token(c))
        || !version.eq_ignore_ascii_case(b"SIP/2.0")
        || find(uri, b':').is_none()
    {
        return None;
    }
    Some(StartLine::Request {
        method: Method::of(method),
        uri: text(uri),
    })
}

/// RFC 3261 `token` characters.
fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

/// Offset just past the blank line ending the headers of the message at the start
/// of `buf`, if the buffer holds all of them.
pub fn header_end(buf: &[u8]) -> Option<usize> {
    lines(buf)
        .skip(1)
        .find(|(line, _)| line.is_empty())
        .map(|(_, end)| end)
}

/// Which header a name is, by full or compact name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Header {
    CallId,
    CSeq,
    From,
    To,
    Contact,
    Expires,
    ContentLength,
    /// (`Proxy-`)`Authorization`; true for the proxy form.
    Authorization(bool),
    /// `WWW-Authenticate` (false) / `Proxy-Authenticate` (true).
    Authenticate(bool),
    Other,
}

fn header_of(name: &[u8]) -> Header {
    let name = trim(name);
    let is = |full: &[u8]| name.eq_ignore_ascii_case(full);
    if is(b"call-id") || is(b"i") {
        Header::CallId
    } else if is(b"cseq") {
        Header::CSeq
    } else if is(b"from") || is(b"f") {
        Header::From
    } else if is(b"to") || is(b"t") {
        Header::To
    } else if is(b"contact") || is(b"m") {
        Header::Contact
    } else if is(b"expires") {
        Header::Expires
    } else if is(b"content-length") || is(b"l") {
        Header::ContentLength
    } else if is(b"authorization") || is(b"proxy-authorization") {
        Header::Authorization(is(b"proxy-authorization"))
    } else if is(b"www-authenticate") || is(b"proxy-authenticate") {
        Header::Authenticate(is(b"proxy-authenticate"))
    } else {
        Header::Other
    }
}

/// Parses the message at the start of `buf` (leading blank lines skipped): `None`
/// unless it starts with a SIP request or status line.
pub fn parse(buf: &[u8]) -> Option<Message> {
    let mut it = lines(buf);
    let (first, _) = it.by_ref().find(|(line, _)| !line.is_empty())?;
    let mut msg = Message {
        start: start_line(first)?,
        call_id: None,
        cseq: None,
        from_aor: None,
        to_aor: None,
        contacts: Vec::new(),
        contact_star: false,
        expires: None,
        content_length: None,
        credentials: Vec::new(),
        challenges: Vec::new(),
        header_len: None,
    };
    // A header is applied once the next line shows it is not folded further.
    let mut pending: Option<(Header, Cow<'_, [u8]>)> = None;
    for (line, end) in it {
        if line.first().is_some_and(|&c| is_ws(c)) {
            if let Some((_, value)) = pending.as_mut() {
                if value.len() < MAX_HEADER_VALUE {
                    let v = value.to_mut();
                    v.push(b' ');
                    v.extend_from_slice(trim(line));
                    v.truncate(MAX_HEADER_VALUE);
                }
            }
            continue;
        }
        if let Some((header, value)) = pending.take() {
            msg.apply(header, &value);
        }
        if line.is_empty() {
            msg.header_len = Some(end);
            break;
        }
        // A line without a colon is not a header: ignore it, keep going.
        if let Some(colon) = find(line, b':') {
            let header = header_of(line.get(..colon).unwrap_or_default());
            if header != Header::Other {
                pending = Some((
                    header,
                    Cow::Borrowed(line.get(colon + 1..).unwrap_or_default()),
                ));
            }
        }
    }
    if let Some((header, value)) = pending {
        msg.apply(header, &value);
    }
    Some(msg)
}

impl Message {
    fn apply(&mut self, header: Header, value: &[u8]) {
        match header {
            // The first of a single-valued header wins.
            Header::CallId if self.call_id.is_none() => {
                let id = trim(value);
                if !id.is_empty() {
                    self.call_id = Some(text(id));
                }
            }
            Header::CSeq if self.cseq.is_none() => {
                let mut parts = value.split(|&c| is_ws(c)).filter(|p| !p.is_empty());
                if let (Some(n), Some(m)) = (parts.next(), parts.next()) {
                    if n.iter().all(u8::is_ascii_digit) {
                        if let Some(number) = number_u32(n) {
                            self.cseq = Some(CSeq {
                                number,
                                method: Method::of(m),
                            });
                        }
                    }
                }
            }
            Header::From if self.from_aor.is_none() => {
                self.from_aor = name_addr(value).and_then(|(uri, _)| aor(uri));
            }
            Header::To if self.to_aor.is_none() => {
                self.to_aor = name_addr(value).and_then(|(uri, _)| aor(uri));
            }
            Header::Contact => {
                for item in split_outside(value, b',', true) {
                    if trim(item) == b"*" {
                        self.contact_star = true;
                    } else if self.contacts.len() < MAX_CONTACTS {
                        self.contacts.extend(contact(item));
                    }
                }
            }
            Header::Expires if self.expires.is_none() => self.expires = number_u32(value),
            Header::ContentLength if self.content_length.is_none() => {
                self.content_length = number(value)
            }
            Header::Authorization(proxy) if self.credentials.len() < MAX_AUTH => {
                let (realm, _) = auth_params(value);
                self.credentials.push(Credentials { proxy, realm });
            }
            Header::Authenticate(proxy) if self.challenges.len() < MAX_AUTH => {
                let (realm, stale) = auth_params(value);
                self.challenges.push(Challenge {
                    proxy,
                    realm,
                    stale,
                });
            }
            _ => {}
        }
    }
}

/// Splits at `sep` outside quoted strings and, with `angles`, outside `<...>` (a
/// display name or URI may hold the separator).
fn split_outside(value: &[u8], sep: u8, angles: bool) -> impl Iterator<Item = &[u8]> {
    let mut in_quote = false;
    let mut escaped = false;
    let mut in_angle = false;
    value.split(move |&c| {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_quote = false;
            }
            return false;
        }
        match c {
            b'"' => in_quote = true,
            b'<' if angles => in_angle = true,
            b'>' => in_angle = false,
            _ => {}
        }
        !in_angle && c == sep
    })
}

/// (realm, stale) of `Digest realm="x", nonce="...", stale=TRUE` (RFC 3261 §25.1).
fn auth_params(value: &[u8]) -> (Option<String>, bool) {
    let value = trim(value);
    // The scheme token, then comma-separated `name=value` pairs.
    let start = value.iter().position(|&c| is_ws(c)).unwrap_or(value.len());
    let mut realm = None;
    let mut stale = false;
    for param in split_outside(value.get(start..).unwrap_or_default(), b',', false) {
        let Some(eq) = find(param, b'=') else {
            continue;
        };
        let name = trim(param.get(..eq).unwrap_or_default());
        let v = unquote(trim(param.get(eq + 1..).unwrap_or_default()));
        if name.eq_ignore_ascii_case(b"realm") && realm.is_none() {
            realm = Some(text(v));
        } else if name.eq_ignore_ascii_case(b"stale") {
            stale = v.eq_ignore_ascii_case(b"true");
        }
    }
    (realm, stale)
}

/// `[display] <uri> ;params` or `uri ;params`: (uri, params text).
fn name_addr(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = trim(value);
    let mut in_quote = false;
    let mut escaped = false;
    let mut lt = None;
    for (i, &c) in value.iter().enumerate() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_quote = false;
            }
        } else if c == b'"' {
            in_quote = true;
        } else if c == b'<' {
            lt = Some(i);
            break;
        }
    }
    let (uri, params) = match lt {
        Some(lt) => {
            let inner = value.get(lt + 1..).unwrap_or_default();
            match find(inner, b'>') {
                Some(gt) => (
                    inner.get(..gt).unwrap_or_default(),
                    inner.get(gt + 1..).unwrap_or_default(),
                ),
                // The capture or the sender cut it short: take what is there.
                None => (inner, &b""[..]),
            }
        }
        // Without `<>`, parameters after `;` belong to the header (RFC 3261 §20.10).
        None => match find(value, b';') {
            Some(semi) => (
                value.get(..semi).unwrap_or_default(),
                value.get(semi..).unwrap_or_default(),
            ),
            None => (value, &b""[..]),
        },
    };
    let uri = trim(uri);
    (!uri.is_empty()).then_some((uri, params))
}

/// `name[=value]` parameters after a name-addr, values unquoted.
fn params(text: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    split_outside(text, b';', true).filter_map(|p| {
        let p = trim(p);
        if p.is_empty() {
            return None;
        }
        Some(match find(p, b'=') {
            Some(eq) => (
                trim(p.get(..eq).unwrap_or_default()),
                unquote(trim(p.get(eq + 1..).unwrap_or_default())),
            ),
            None => (p, &b""[..]),
        })
    })
}

fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        [b'"', inner @ ..] => inner,
        _ => v,
    }
}

/// (scheme:, user, host part) of a SIP URI.
fn uri_parts(uri: &[u8]) -> (&[u8], Option<&[u8]>, &[u8]) {
    let colon = find(uri, b':').map_or(0, |c| c + 1);
    let (scheme, rest) = uri.split_at(colon.min(uri.len()));
    match find(rest, b'@') {
        Some(at) => {
            let userinfo = rest.get(..at).unwrap_or_default();
            // `user:password@` -- the password is nobody's business.
            let user = userinfo.split(|&c| c == b':').next().unwrap_or_default();
            (scheme, Some(user), rest.get(at + 1..).unwrap_or_default())
        }
        None => (scheme, None, rest),
    }
}

/// Address of record: the URI without its parameters and headers.
fn aor(uri: &[u8]) -> Option<String> {
    let (scheme, user, host) = uri_parts(uri);
    let host_end = host
        .iter()
        .position(|&c| c == b';' || c == b'?' || c == b'>')
        .unwrap_or(host.len());
    let host = host.get(..host_end).unwrap_or_default();
    let mut out = Vec::with_capacity(uri.len());
    out.extend_from_slice(scheme);
    if let Some(user) = user {
        out.extend_from_slice(user);
        out.push(b'@');
    }
    out.extend_from_slice(host);
    let out = text(&out);
    (!out.is_empty()).then_some(out)
}

fn contact(item: &[u8]) -> Option<Contact> {
    let (uri, param_text) = name_addr(item)?;
    let mut c = Contact {
        uri: text(uri),
        user: uri_parts(uri).1.map(text).filter(|u| !u.is_empty()),
        ..Contact::default()
    };
    for (name, value) in params(param_text) {
        if name.eq_ignore_ascii_case(b"expires") {
            c.expires = number_u32(value);
        } else if name.eq_ignore_ascii_case(b"cisco-keep-alive") {
            c.cisco_keep_alive = true;
        } else if name.eq_ignore_ascii_case(b"+sip.instance") {
            let v = match value {
                [b'<', inner @ .., b'>'] => inner,
                _ => value,
            };
            c.instance = Some(text(v));
        } else if name.eq_ignore_ascii_case(b"+u.sip!devicename.ccm.cisco.com") {
            c.device_name = Some(text(value)).filter(|v| !v.is_empty());
        }
    }
    Some(c)
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// The MAC in a Cisco phone's instance id `urn:uuid:00000000-0000-0000-0000-<MAC>`,
/// upper case.
fn cisco_instance_mac(instance: &str) -> Option<String> {
    let uuid = instance
        .get(..9)
        .filter(|p| p.eq_ignore_ascii_case("urn:uuid:"))
        .and_then(|_| instance.get(9..))?;
    let mac = uuid.strip_prefix("00000000-0000-0000-0000-")?;
    (is_uuid(uuid) && mac.bytes().any(|c| c != b'0')).then(|| mac.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::sip::fixtures::*;

    #[test]
    fn text_replaces_control_characters_and_bad_utf8() {
        // The malformed suite's hostile fields: ANSI escapes, NUL, BEL, bare CR, DEL,
        // C1 (CSI), invalid UTF-8; quotes and backslashes stay (JSON escapes those).
        let raw = b" a\x1b[31m\x00\x07\rb\x7f\xc2\x9b\xff\tc \"q\" \\ ";
        assert_eq!(
            text(raw),
            "a\u{fffd}[31m\u{fffd}\u{fffd}\u{fffd}b\u{fffd}\u{fffd}\u{fffd} c \"q\" \\"
        );
        assert_eq!(text("é".repeat(300).as_bytes()).chars().count(), MAX_TEXT);
    }

    #[test]
    fn parses_the_seed_cucm_register() {
        let msg = parse(&cucm_register(11435)).expect("a SIP message");
        assert_eq!(
            msg.start,
            StartLine::Request {
                method: Method::Register,
                uri: "sip:10.106.114.161".to_string()
            }
        );
        assert_eq!(msg.call_id.as_deref(), Some(CALL_ID));
        let cseq = msg.cseq.expect("cseq");
        assert_eq!((cseq.number, cseq.method), (11435, Method::Register));
        assert_eq!(msg.to_aor.as_deref(), Some("sip:5678@10.106.114.161"));
        assert_eq!(msg.from_aor.as_deref(), Some("sip:5678@10.106.114.161"));
        assert_eq!(msg.expires, Some(3600));
        assert_eq!(msg.content_length, Some(0));
        assert_eq!(msg.header_len, Some(cucm_register(11435).len()));
        let [contact] = msg.contacts.as_slice() else {
            panic!("one contact: {:?}", msg.contacts)
        };
        assert_eq!(
            contact.uri,
            "sip:9e9e1ffb-0206-4ea1-6d77-ba04a72017f7@10.106.114.185:53006;transport=tcp"
        );
        assert_eq!(
            contact.instance.as_deref(),
            Some("urn:uuid:00000000-0000-0000-0000-0024142ddf24")
        );
        assert_eq!(contact.device_name.as_deref(), Some("SEP0024142DDF24"));
        assert_eq!(contact.device().as_deref(), Some("SEP0024142DDF24"));
        assert_eq!(contact.expires, None);
        assert!(!contact.cisco_keep_alive);
    }

    #[test]
    fn parses_the_seed_200_ok_and_backup_keepalive() {
        let ok = parse(&cucm_ok(11435)).expect("200 OK");
        assert_eq!(
            ok.start,
            StartLine::Response {
                status: 200,
                reason: "OK".to_string()
            }
        );
        assert_eq!(ok.expires, Some(120));
        assert_eq!(ok.cseq.map(|c| c.method), Some(Method::Register));
        assert_eq!(ok.method(), Some(Method::Register));

        let ka = parse(&backup_keepalive(18800)).expect("keepalive");
        assert_eq!(ka.expires, Some(0));
        assert_eq!(
            ka.call_id.as_deref(),
            Some("HxTK.mbBHIgxjstVwexTbhVnUxNeuxle")
        );
        assert_eq!(ka.to_aor.as_deref(), Some("sip:6836@10.60.1.12"));
        let contact = &ka.contacts[0];
        assert!(contact.cisco_keep_alive);
        assert_eq!(contact.expires, Some(0));
        assert_eq!(contact.device().as_deref(), Some("SEPE0D1730AC1B1"));
    }

    #[test]
    fn parses_compact_forms_odd_spacing_folding_and_bare_line_feeds() {
        let text = b"OPTIONS   sip:cvp@10.1.1.20:5060   SIP/2.0\n\
v: SIP/2.0/UDP 10.1.1.10:5060;branch=z9hG4bK1\n\
f: \"Ping, <Server>\" <sip:ping@10.1.1.10>;tag=1\n\
t: sip:cvp@10.1.1.20;user=phone\n\
I :  abc@host  \n\
CSEQ:   7   OPTIONS\n\
m: <sip:ping@10.1.1.10:5060>;expires=60, \"x,y\" <sip:other@1.2.3.4>\n\
\t;expires=30\n\
X-Unknown: whatever: with colons\n\
no colon on this line\n\
L: 0\n\
\n";
        let msg = parse(text).expect("parsed");
        assert_eq!(
            msg.start,
            StartLine::Request {
                method: Method::Options,
                uri: "sip:cvp@10.1.1.20:5060".to_string()
            }
        );
        assert_eq!(msg.call_id.as_deref(), Some("abc@host"));
        let cseq = msg.cseq.expect("cseq");
        assert_eq!((cseq.number, cseq.method), (7, Method::Options));
        assert_eq!(msg.from_aor.as_deref(), Some("sip:ping@10.1.1.10"));
        // `t:` without `<>`: `;user=phone` is a header parameter, not part of the URI.
        assert_eq!(msg.to_aor.as_deref(), Some("sip:cvp@10.1.1.20"));
        assert_eq!(msg.contacts.len(), 2);
        assert_eq!(msg.contacts[0].expires, Some(60));
        // The folded line continues the second contact.
        assert_eq!(msg.contacts[1].uri, "sip:other@1.2.3.4");
        assert_eq!(msg.contacts[1].expires, Some(30));
        assert_eq!(msg.content_length, Some(0));
        assert_eq!(msg.header_len, Some(text.len()));

        let star =
            parse(b"REGISTER sip:r SIP/2.0\r\nContact: *\r\nExpires: 0\r\n\r\n").expect("star");
        assert!(star.contact_star);
        assert!(star.contacts.is_empty());
    }

    #[test]
    fn start_lines_are_recognised_strictly() {
        let status = |l: &[u8]| match start_line(l) {
            Some(StartLine::Response { status, .. }) => Some(status),
            _ => None,
        };
        assert_eq!(status(b"SIP/2.0 200 OK"), Some(200));
        assert_eq!(status(b"sip/2.0 503 Service Unavailable"), Some(503));
        assert_eq!(status(b"SIP/2.0 180"), Some(180));
        assert_eq!(status(b"SIP/2.0 20 OK"), None);
        assert_eq!(status(b"SIP/2.0 2000 OK"), None);
        assert_eq!(status(b"SIP/2.0 099 Low"), None);
        assert!(start_line(b"REGISTER sip:x SIP/2.0").is_some());
        assert!(start_line(b"INVITE sip:bob@b.example SIP/2.0").is_some());
        assert!(start_line(b"REGISTER sip:x HTTP/1.1").is_none());
        assert!(start_line(b"Contact: <sip:a@b> SIP/2.0").is_none());
        assert!(start_line(b"hello world").is_none());
        assert!(start_line(b"").is_none());
    }

    #[test]
    fn device_names_fall_back_from_cisco_parameters() {
        let contact = |c: &str| {
            let text = format!("REGISTER sip:r SIP/2.0\r\nContact: {c}\r\n\r\n");
            parse(text.as_bytes()).expect("parsed").contacts[0].device()
        };
        assert_eq!(
        contact("<sip:0a1b2c3d-0000-1111-2222-333344445555@h>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-00aabbccddee>\""),
        Some("SEP00AABBCCDDEE".to_string())
    );
        assert_eq!(
            contact("<sip:SEP001122334455@10.0.0.5:5060>"),
            Some("SEP001122334455".to_string())
        );
        assert_eq!(
            contact("<sip:0a1b2c3d-0000-1111-2222-333344445555@h>"),
            None
        );
        assert_eq!(contact("<sip:10.0.0.5:5060>"), None);
        // Only Cisco's form (zeros, then the MAC) names a SEP device; other vendors'
        // instance ids (RFC 4122 UUIDs, some ending in a MAC too) name none.
        for other in [
            "<sip:2001@h>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-0004f2a1b2c3>\"",
            "<sip:2001@h>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\"",
            "<sip:2001@h>;+sip.instance=\"<urn:uuid:10000000-0000-0000-0000-00aabbccddee>\"",
            "<sip:2001@h>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000000>\"",
            "<sip:2001@h>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-00aabbccdd>\"",
        ] {
            assert_eq!(contact(other), Some("2001".to_string()), "{other}");
        }
    }

    #[test]
    fn digest_credentials_and_challenges_are_read() {
        let msg = parse(
            b"REGISTER sip:r SIP/2.0\r\n\
Authorization: Digest username=\"a,b\", realm=\"pbx, inc\", nonce=\"n\"\r\n\
Proxy-Authorization: Digest realm=edge,nonce=\"m\"\r\n\r\n",
        )
        .expect("parsed");
        assert_eq!(
            msg.credentials,
            [
                Credentials {
                    proxy: false,
                    realm: Some("pbx, inc".into())
                },
                Credentials {
                    proxy: true,
                    realm: Some("edge".into())
                }
            ]
        );
        let msg = parse(
            b"SIP/2.0 401 Unauthorized\r\n\
WWW-Authenticate: Digest realm=\"pbx\", nonce=\"x\", stale=TRUE, algorithm=MD5\r\n\
WWW-Authenticate: Digest realm=\"pbx\", nonce=\"y\", algorithm=SHA-256\r\n\r\n",
        )
        .expect("parsed");
        let seen: Vec<(Option<&str>, bool)> = msg
            .challenges
            .iter()
            .map(|c| (c.realm.as_deref(), c.stale))
            .collect();
        assert_eq!(seen, [(Some("pbx"), true), (Some("pbx"), false)]);
    }

    #[test]
    fn truncated_captures_yield_what_is_there_and_no_clipped_values() {
        let full = cucm_register(11435);
        let expires_at = full
            .windows(9)
            .position(|w| w == b"Expires: ")
            .expect("Expires header");
        for cut in 0..full.len() {
            let Some(msg) = parse(&full[..cut]) else {
                continue;
            };
            assert!(msg.is_truncated(), "cut at {cut}");
            // A line the capture clipped is never read: no `Expires: 36`.
            assert!(
                msg.expires.is_none() || cut >= expires_at + 15,
                "cut at {cut}"
            );
            assert!(msg.call_id.is_none() || msg.call_id.as_deref() == Some(CALL_ID));
        }
        let head = parse(&full[..400]).expect("start line and a few headers");
        assert_eq!(head.call_id.as_deref(), Some(CALL_ID));
        assert_eq!(head.cseq.map(|c| c.number), Some(11435));
    }

    #[test]
    fn never_panics_and_bounds_strings_on_hostile_input() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let seeds = [
            cucm_register(1),
            cucm_ok(1),
            backup_keepalive(1),
            options("x", 1),
        ];
        for round in 0..4000 {
            let mut data = seeds[round % seeds.len()].clone();
            for _ in 0..(noise(&mut rng) % 12) {
                let at = (noise(&mut rng) as usize) % data.len();
                match noise(&mut rng) % 4 {
                    0 => data[at] = noise(&mut rng) as u8,
                    1 => data.insert(
                        at,
                        b"\r\n:;<>\",=@ \t\xff\xfe"[(noise(&mut rng) % 14) as usize],
                    ),
                    2 => data.truncate(at.max(1)),
                    _ => {
                        let n = (noise(&mut rng) % 3000) as usize;
                        let filler = [b'9', b'"', b'<', b'a', 0xc3][round % 5];
                        data.splice(at..at, std::iter::repeat_n(filler, n));
                    }
                }
            }
            if let Some(msg) = parse(&data) {
                for s in [&msg.call_id, &msg.to_aor, &msg.from_aor]
                    .into_iter()
                    .flatten()
                {
                    assert!(s.chars().count() <= MAX_TEXT);
                }
                assert!(msg.contacts.len() <= 16);
            }
            let _ = header_end(&data);
        }
    }
}
