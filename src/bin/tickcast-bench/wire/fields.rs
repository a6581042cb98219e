//! Byte search for the few fields the bench reads from the server's JSON (`"seq":`, the send
//! time `"t":`, the topic index of `bench.t<N>`, the welcome's `"shard":`, an op's name and
//! error code) instead of a JSON parser: the payloads are small and this runs once a message.

/// Position of `needle` in `hay` (first-byte scan, then compare): the payloads are ~100 B.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    if hay.len() < needle.len() {
        return None;
    }
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        if hay[i] == first && &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Parses the unsigned decimal right after `key` (e.g. `"seq":`), skipping spaces.
pub fn number_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(hay, key)? + key.len();
    parse_u64(&hay[at..])
}

pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii_start();
    let mut n: u64 = 0;
    let mut digits = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(n)
}

/// What the bench reads from one data frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataInfo {
    pub seq: u64,
    /// Index N of a `bench.t<N>` topic, if the topic has that form.
    pub topic_idx: Option<u32>,
    /// The publisher's CLOCK_MONOTONIC send time (ns), if the data carries `"t":`.
    pub sent_ns: Option<u64>,
}

/// Classifies a text payload: a protocol reply (`{"op":...`) or a data frame.
pub fn is_op(payload: &[u8]) -> bool {
    let head = &payload[..payload.len().min(16)];
    find(head, b"\"op\"").is_some()
}

/// Reads `seq`, the topic index and the send time from a data frame without parsing JSON.
/// The send time is searched only after `"data":` so no envelope field can be mistaken for it.
pub fn parse_data(payload: &[u8]) -> Option<DataInfo> {
    let seq = number_after(payload, b"\"seq\":")?;
    let topic_idx = find(payload, b"\"topic\":\"bench.t").and_then(|i| {
        let n = parse_u64(&payload[i + b"\"topic\":\"bench.t".len()..])?;
        u32::try_from(n).ok()
    });
    let sent_ns = find(payload, b"\"data\":").and_then(|d| number_after(&payload[d..], b"\"t\":"));
    Some(DataInfo {
        seq,
        topic_idx,
        sent_ns,
    })
}

/// The op name of a reply (`welcome`, `ack`, `error`, `pong`, ...).
pub fn op_name(payload: &[u8]) -> &[u8] {
    let Some(i) = find(payload, b"\"op\":\"") else {
        return b"";
    };
    let rest = &payload[i + 6..];
    let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
    &rest[..end]
}

/// The string value of `"key":"..."` (no escapes expected: error codes, conn ids).
pub fn string_after<'a>(payload: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let i = find(payload, key)? + key.len();
    let rest = payload[i..].trim_ascii_start().strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_fields_by_byte_search() {
        let p = br#"{"topic":"bench.t17","seq":1051,"ts":1763758800123456,"data":{"t":98765,"pad":"xx"}}"#;
        assert!(!is_op(p));
        let d = parse_data(p).unwrap();
        assert_eq!(
            d,
            DataInfo {
                seq: 1051,
                topic_idx: Some(17),
                sent_ns: Some(98765)
            }
        );
        // Key order inside data does not matter; "ts" is not mistaken for "t".
        let p2 = br#"{"topic":"trades.BTCUSDT","seq":2,"ts":5,"data":{"pad":"x","t": 42}}"#;
        assert_eq!(
            parse_data(p2).unwrap(),
            DataInfo {
                seq: 2,
                topic_idx: None,
                sent_ns: Some(42)
            }
        );
        let p3 = br#"{"topic":"a","seq":3,"ts":5,"data":[1,2]}"#;
        assert_eq!(parse_data(p3).unwrap().sent_ns, None);
        assert!(parse_data(br#"{"topic":"a"}"#).is_none());
    }

    #[test]
    fn op_replies_by_byte_search() {
        let w = br#"{"op":"welcome","conn":"c7","shard":1,"version":"0.1","ping_interval_s":20}"#;
        assert!(is_op(w));
        assert_eq!(op_name(w), b"welcome");
        assert_eq!(number_after(w, b"\"shard\":"), Some(1));
        assert_eq!(string_after(w, b"\"conn\":"), Some(&b"c7"[..]));
        let e = br#"{"op":"error","id":1,"code":"bad_topic","message":"no"}"#;
        assert_eq!(op_name(e), b"error");
        assert_eq!(string_after(e, b"\"code\":"), Some(&b"bad_topic"[..]));
        assert_eq!(
            number_after(br#"{"op":"ack","id": 12,"topics":[]}"#, b"\"id\":"),
            Some(12)
        );
        assert_eq!(
            number_after(b"\"seq\":99999999999999999999", b"\"seq\":"),
            None
        );
    }
}
