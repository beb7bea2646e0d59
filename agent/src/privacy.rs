//! Optional privacy for SIP: the user part of an address of record is usually a phone
//! number or a person's name. `--sip-users hash|redact` replaces it, and the device name,
//! everywhere in an event (fields, message, evidence) before any output sees it.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::event::Event;
use crate::sink::Filter;

/// What to do with SIP user parts (phone numbers, names) in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SipUsers {
    /// As seen on the wire.
    #[default]
    Keep,
    /// Replaced by a keyed hash (`h:` and 12 hex digits of HMAC-SHA256): the same user
    /// gives the same value with the same key, and the value does not give the user.
    Hash,
    /// Replaced by `redacted`.
    Redact,
}

/// Privacy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privacy {
    pub sip_users: SipUsers,
    /// The HMAC key of `Hash`.
    pub hash_key: String,
}

impl Privacy {
    /// Replaces SIP user parts and device names in `ev`.
    pub fn scrub(&self, ev: &mut Event) {
        if self.sip_users == SipUsers::Keep {
            return;
        }
        let Some(sip) = ev.sip.as_mut() else {
            return;
        };
        let mut secrets: Vec<(String, String)> = Vec::new();
        if let Some(aor) = sip.aor.as_mut() {
            if let Some((user, replaced)) = self.replace_user(aor) {
                secrets.push((user, replaced));
            }
        }
        if let Some(dev) = sip.device.as_mut() {
            let mask = self.mask(dev);
            secrets.push((std::mem::replace(dev, mask.clone()), mask));
        }
        // Longest first: a device name may contain the user part.
        secrets.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        secrets.retain(|(s, _)| !s.is_empty());
        let scrub = |text: &mut String| {
            for (secret, mask) in &secrets {
                if text.contains(secret.as_str()) {
                    *text = text.replace(secret.as_str(), mask);
                }
            }
        };
        scrub(&mut ev.message);
        if let Some(evidence) = ev.heartbeat.evidence.as_mut() {
            evidence.iter_mut().for_each(scrub);
        }
    }

    /// `sip:2001@cucm` -> `sip:h:…@cucm`; returns (user, its mask).
    fn replace_user(&self, uri: &mut String) -> Option<(String, String)> {
        let start = uri.find(':').map_or(0, |i| i + 1);
        let end = uri[start..].find('@').map(|i| start + i)?;
        let user = uri[start..end].to_string();
        if user.is_empty() {
            return None;
        }
        let mask = self.mask(&user);
        uri.replace_range(start..end, &mask);
        Some((user, mask))
    }

    fn mask(&self, value: &str) -> String {
        match self.sip_users {
            SipUsers::Keep => value.to_string(),
            SipUsers::Redact => "redacted".to_string(),
            SipUsers::Hash => {
                let mut mac = Hmac::<Sha256>::new_from_slice(self.hash_key.as_bytes())
                    .expect("HMAC takes keys of any length");
                mac.update(value.as_bytes());
                let tag = mac.finalize().into_bytes();
                let hex: String = tag[..6].iter().map(|b| format!("{b:02x}")).collect();
                format!("h:{hex}")
            }
        }
    }
}

/// Applies [`Privacy`] to every event on its way to another sink (`sink::Filtered`);
/// events without SIP fields pass as they are.
impl Filter for Privacy {
    fn apply<'e>(&mut self, ev: &'e Event) -> Cow<'e, Event> {
        if self.sip_users == SipUsers::Keep || ev.sip.is_none() {
            return Cow::Borrowed(ev);
        }
        let mut ev = ev.clone();
        self.scrub(&mut ev);
        Cow::Owned(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Level, Observer, Said, SipFields};

    fn registered() -> Event {
        let message = "sip 10.0.0.5:5060 -> 10.0.0.1:5060: SEP00112233 (sip:+4930123456@cucm.example) registered for 120 s";
        let observer = Observer {
            hostname: "h".into(),
            ingress: None,
        };
        let said = Said {
            action: crate::event::Action::SipRegistered,
            level: Level::Info,
            message: message.into(),
        };
        let mut ev = Event::new("t".into(), observer, said);
        ev.sip = Some(SipFields {
            aor: Some("sip:+4930123456@cucm.example".into()),
            device: Some("SEP00112233".into()),
            call_id: Some("abc@10.0.0.5".into()),
            ..SipFields::default()
        });
        ev.heartbeat.evidence = Some(vec!["last REGISTER from +4930123456".into()]);
        ev
    }

    #[test]
    fn hash_is_keyed_stable_and_removes_the_number_everywhere() {
        let p = Privacy {
            sip_users: SipUsers::Hash,
            hash_key: "0123456789abcdef".into(),
        };
        let mut a = registered();
        p.scrub(&mut a);
        let line = a.to_line();
        assert!(!line.contains("4930123456"), "{line}");
        assert!(!line.contains("SEP00112233"), "{line}");
        let aor = a.sip.as_ref().unwrap().aor.clone().unwrap();
        assert!(
            aor.starts_with("sip:h:") && aor.ends_with("@cucm.example"),
            "{aor}"
        );
        assert!(a.message.contains(&aor), "{}", a.message);
        assert_eq!(
            a.sip.as_ref().unwrap().call_id.as_deref(),
            Some("abc@10.0.0.5")
        );
        let mut b = registered();
        p.scrub(&mut b);
        assert_eq!(a.to_line(), b.to_line(), "same key, same hashes");
        let other = Privacy {
            hash_key: "another key of 16+".into(),
            ..p
        };
        let mut c = registered();
        other.scrub(&mut c);
        assert_ne!(c.sip.unwrap().aor, Some(aor));
    }

    #[test]
    fn redact_and_keep() {
        let mut ev = registered();
        Privacy {
            sip_users: SipUsers::Redact,
            hash_key: String::new(),
        }
        .scrub(&mut ev);
        assert_eq!(
            ev.sip.as_ref().unwrap().aor.as_deref(),
            Some("sip:redacted@cucm.example")
        );
        assert!(!ev.to_line().contains("4930123456"));
        let mut ev = registered();
        Privacy::default().scrub(&mut ev);
        assert_eq!(ev.to_line(), registered().to_line());
    }
}
