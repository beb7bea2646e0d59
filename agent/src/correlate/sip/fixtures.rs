//! Test messages. The CUCM ones are the seed's
//! (`shared/seeds/cucm-sccp-sip-keepalive-ocr-zh.txt`: an OCR'd Cisco support article)
//! with the OCR damage repaired.

/// Nanoseconds in a second.
pub(crate) const SEC: u64 = 1_000_000_000;

pub(crate) const PHONE: &str = "10.106.114.185:53006";
pub(crate) const CUCM: &str = "10.106.114.161:5060";
/// Seed TCP sequence numbers: the phone's REGISTER and CUCM's 100 Trying of frame 1/2.
pub(crate) const PHONE_ISN: u32 = 2_991_995_217;
pub(crate) const CUCM_ISN: u32 = 1_953_872_619;
pub(crate) const CALL_ID: &str = "0024142d-df24000a-44da4e09-0de51424@10.106.114.185";
pub(crate) const CONTACT: &str = "<sip:9e9e1ffb-0206-4ea1-6d77-ba04a72017f7@10.106.114.185:53006;transport=tcp>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-0024142ddf24>\";+u.sip!devicename.ccm.cisco.com=\"SEP0024142DDF24\";+u.sip!model.ccm.cisco.com=\"437\"";

pub(crate) fn crlf(lines: &[&str]) -> Vec<u8> {
    let mut s = lines.join("\r\n");
    s.push_str("\r\n\r\n");
    s.into_bytes()
}

/// The seed's CUCM REGISTER (Cisco 7975, Expires 3600), CSeq `cseq`.
pub(crate) fn cucm_register(cseq: u32) -> Vec<u8> {
    crlf(&[
        "REGISTER sip:10.106.114.161 SIP/2.0",
        &format!("Via: SIP/2.0/TCP 10.106.114.185:53006;branch=z9hG4bKd451a4fa{cseq}"),
        "From: <sip:5678@10.106.114.161>;tag=0024142ddf242c6644b6e5d2-f01c795a",
        "To: <sip:5678@10.106.114.161>",
        &format!("Call-ID: {CALL_ID}"),
        "Max-Forwards: 70",
        "Date: Wed, 15 Jul 2015 12:42:56 GMT",
        &format!("CSeq: {cseq} REGISTER"),
        "User-Agent: Cisco-CP7975G/9.3.1",
        &format!("Contact: {CONTACT}"),
        "Supported: replaces,join,sdp-anat,norefersub,resource-priority,extended-refer,X-cisco-callinfo,X-cisco-serviceuri,X-cisco-escapecodes,X-cisco-service-control,X-cisco-srtp-fallback,X-cisco-monrec,X-cisco-config,X-cisco-sis-6.0.0,X-cisco-xsi-8.5.1",
        "Content-Length: 0",
        "Expires: 3600",
    ])
}

pub(crate) fn cucm_answer(cseq: u32, status_line: &str, extra: &[&str]) -> Vec<u8> {
    let mut lines = vec![
        status_line.to_string(),
        format!("Via: SIP/2.0/TCP 10.106.114.185:53006;branch=z9hG4bKd451a4fa{cseq}"),
        "From: <sip:5678@10.106.114.161>;tag=0024142ddf242c6644b6e5d2-f01c795a".to_string(),
        "To: <sip:5678@10.106.114.161>;tag=1708299782".to_string(),
        "Date: Wed, 15 Jul 2015 12:42:59 GMT".to_string(),
        format!("Call-ID: {CALL_ID}"),
        format!("CSeq: {cseq} REGISTER"),
    ];
    lines.extend(extra.iter().map(|s| s.to_string()));
    lines.push("Content-Length: 0".to_string());
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    crlf(&refs)
}

pub(crate) fn cucm_trying(cseq: u32) -> Vec<u8> {
    cucm_answer(cseq, "SIP/2.0 100 Trying", &[])
}

/// The seed's 200 OK: `Expires: 120` and the phone's binding.
pub(crate) fn cucm_ok(cseq: u32) -> Vec<u8> {
    let contact = format!("Contact: {CONTACT}");
    cucm_answer(
        cseq,
        "SIP/2.0 200 OK",
        &[
            "Expires: 120",
            &contact,
            "Supported: X-cisco-srtp-fallback,X-cisco-sis-6.0.0",
        ],
    )
}

pub(crate) const BACKUP_PHONE: &str = "10.60.63.21:3784";
pub(crate) const BACKUP_CUCM: &str = "10.60.1.12:5060";

/// The seed's keepalive to the backup CUCM: Expires 0 and `;expires=0;cisco-keep-alive`.
pub(crate) fn backup_keepalive(cseq: u32) -> Vec<u8> {
    crlf(&[
        "REGISTER sip:10.60.1.12:5060;transport=tcp SIP/2.0",
        "Via: SIP/2.0/TCP 10.60.63.21:3784;rport;branch=z9hG4bKPjdcJ819aZtTCtnvr0VBheV6p0OuL8aC.pG",
        "Max-Forwards: 70",
        "From: <sip:6836@10.60.1.12>;tag=50l-ews53.DGTDu5LB9orkdDpZIccNov",
        "To: <sip:6836@10.60.1.12>",
        "Call-ID: HxTK.mbBHIgxjstVwexTbhVnUxNeuxle",
        &format!("CSeq: {cseq} REGISTER"),
        "Expires: 0",
        "Contact: <sip:e2b0f175-feae-d664-befa-b7cd0837fcc6@10.60.63.21:5060;transport=TCP>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-e0d1730ac1b1>\";+u.sip!devicename.ccm.cisco.com=\"SEPE0D1730AC1B1\";+u.sip!model.ccm.cisco.com=\"592\";expires=0;cisco-keep-alive",
        "Content-Length: 0",
    ])
}

pub(crate) fn backup_ok(cseq: u32) -> Vec<u8> {
    crlf(&[
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/TCP 10.60.63.21:3784;rport=3784;branch=z9hG4bKPjdcJ819aZtTCtnvr0VBheV6p0OuL8aC.pG",
        "From: <sip:6836@10.60.1.12>;tag=50l-ews53.DGTDu5LB9orkdDpZIccNov",
        "To: <sip:6836@10.60.1.12>;tag=99887766",
        "Call-ID: HxTK.mbBHIgxjstVwexTbhVnUxNeuxle",
        &format!("CSeq: {cseq} REGISTER"),
        "Expires: 0",
        "Content-Length: 0",
    ])
}

pub(crate) const CVP: &str = "10.1.1.10:5060";
pub(crate) const SIP_SERVER: &str = "10.1.1.20:5060";

pub(crate) fn options(call_id: &str, cseq: u32) -> Vec<u8> {
    crlf(&[
        "OPTIONS sip:10.1.1.20:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 10.1.1.10:5060;branch=z9hG4bK-opt",
        "From: <sip:cvp@10.1.1.10>;tag=cvp1",
        "To: <sip:10.1.1.20:5060>",
        &format!("Call-ID: {call_id}"),
        &format!("CSeq: {cseq} OPTIONS"),
        "Max-Forwards: 70",
        "Content-Length: 0",
    ])
}

pub(crate) fn options_answer(call_id: &str, cseq: u32, status_line: &str) -> Vec<u8> {
    crlf(&[
        status_line,
        "Via: SIP/2.0/UDP 10.1.1.10:5060;branch=z9hG4bK-opt",
        "From: <sip:cvp@10.1.1.10>;tag=cvp1",
        "To: <sip:10.1.1.20:5060>;tag=srv",
        &format!("Call-ID: {call_id}"),
        &format!("CSeq: {cseq} OPTIONS"),
        "Content-Length: 0",
    ])
}

/// xorshift64: reproducible noise without a dependency.
pub(crate) fn noise(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
