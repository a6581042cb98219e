//! The server side of the NATS client protocol, as a subscriber reads it: `INFO`, `MSG`,
//! `HMSG`, `PING`, `PONG`, `+OK`, `-ERR` (NATS documentation, "Client Protocol").
//!
//! Hand-written rather than taken from async-nats: that client runs on tokio and owns its
//! socket, and the point of shard 0's live reader (`shard::live`, `cluster.nats_live_reader`)
//! is to read the broker's socket on the shard's own io_uring runtime, without a second thread
//! and a cross-thread wake per message. A subscriber needs seven operations; the broker is
//! still untrusted input here: every length is bounded before anything is buffered for it.

use std::ops::Range;

/// Longest control line accepted. The server's `INFO` is the longest: it lists the cluster's
/// `connect_urls`, a few KiB for a large NATS cluster; a `MSG` line is a subject and three
/// numbers. Past this without a line end the connection is not speaking NATS.
pub(crate) const CONTROL_LINE_MAX: usize = 64 * 1024;

/// Largest header block of a message. JetStream's RePublish adds its headers (`Nats-Stream`,
/// `Nats-Subject`, `Nats-Sequence`, …) to a message the server already checked against
/// `max_payload`, and does not check again: headers are bounded on their own.
pub(crate) const HEADERS_MAX: usize = 64 * 1024;

/// One operation from the server. Ranges index the buffer given to [`parse`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `MSG`/`HMSG`: the subscription id and the payload (headers skipped).
    Msg {
        sid: u64,
        payload: Range<usize>,
    },
    Ping,
    Pong,
    Ok,
    /// `-ERR` and its text (quotes removed).
    Err(String),
    /// `INFO` and its JSON object.
    Info(Range<usize>),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// An operation, and the bytes it took from the front of the buffer.
    Op(Op, usize),
    /// The buffer holds only the start of an operation: read more.
    Incomplete,
    /// Not NATS, or beyond a bound: the connection must be dropped.
    Invalid(String),
}

/// Parses the operation at the front of `buf`. A message's payload may be at most
/// `max_payload` bytes (the server's `INFO` says how many it allows), its headers
/// [`HEADERS_MAX`].
pub(crate) fn parse(buf: &[u8], max_payload: usize) -> Parsed {
    let window = &buf[..buf.len().min(CONTROL_LINE_MAX + 2)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if window.len() > CONTROL_LINE_MAX {
            return Parsed::Invalid(format!("no line end in {CONTROL_LINE_MAX} bytes"));
        }
        return Parsed::Incomplete;
    };
    if nl == 0 || buf[nl - 1] != b'\r' {
        return Parsed::Invalid("a line not ended by CRLF".into());
    }
    let line = &buf[..nl - 1];
    let after = nl + 1;
    let (name, rest) = match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let is = |op: &str| name.eq_ignore_ascii_case(op.as_bytes());
    if is("MSG") || is("HMSG") {
        return parse_msg(buf, rest, after, is("HMSG"), max_payload);
    }
    let op = if is("PING") {
        Op::Ping
    } else if is("PONG") {
        Op::Pong
    } else if is("+OK") {
        Op::Ok
    } else if is("-ERR") {
        let text = String::from_utf8_lossy(rest.trim_ascii());
        Op::Err(text.trim_matches('\'').to_string())
    } else if is("INFO") {
        let start = (line.len() - rest.len()) + leading_blanks(rest);
        Op::Info(start..line.len())
    } else {
        let shown: String = String::from_utf8_lossy(&name[..name.len().min(16)]).into();
        return Parsed::Invalid(format!("unknown operation {shown:?}"));
    };
    Parsed::Op(op, after)
}

fn leading_blanks(s: &[u8]) -> usize {
    s.iter().take_while(|b| **b == b' ' || **b == b'\t').count()
}

/// `MSG <subject> <sid> [reply-to] <#bytes>` or
/// `HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>`, then the bytes and CRLF.
fn parse_msg(buf: &[u8], args: &[u8], start: usize, headers: bool, max: usize) -> Parsed {
    let mut words = [&[][..]; 5];
    let mut n = 0;
    for w in args
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty())
    {
        if n == words.len() {
            return Parsed::Invalid("too many arguments to MSG".into());
        }
        words[n] = w;
        n += 1;
    }
    let (sid, header_len, total) = match (headers, n) {
        (false, 3 | 4) => (words[1], None, words[n - 1]),
        (true, 4 | 5) => (words[1], Some(words[n - 2]), words[n - 1]),
        _ => return Parsed::Invalid(format!("{n} arguments to a message")),
    };
    let (Some(sid), Some(total)) = (number(sid), number(total)) else {
        return Parsed::Invalid("a message's sid or size is not a number".into());
    };
    let header_len = match header_len.map(number) {
        None => 0,
        Some(Some(h)) if h <= total => h,
        Some(_) => return Parsed::Invalid("a message's header size is wrong".into()),
    };
    if total - header_len > max as u64 || header_len > HEADERS_MAX as u64 {
        return Parsed::Invalid(format!(
            "a message of {} bytes with {header_len} bytes of headers, over the server's \
             max_payload {max} or {HEADERS_MAX} bytes of headers",
            total - header_len
        ));
    }
    let (total, header_len) = (total as usize, header_len as usize);
    let end = start + total;
    if buf.len() < end + 2 {
        return Parsed::Incomplete;
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Parsed::Invalid("a message not followed by CRLF".into());
    }
    Parsed::Op(
        Op::Msg {
            sid,
            payload: start + header_len..end,
        },
        end + 2,
    )
}

/// A decimal number of at most 19 digits (no sign, no blanks).
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation in `wire`, its ranges indexing `wire`.
    fn ops(wire: &[u8]) -> Vec<Op> {
        let (mut out, mut at) = (Vec::new(), 0);
        loop {
            match parse(&wire[at..], 1024) {
                Parsed::Op(op, used) => {
                    let shift = |r: Range<usize>| r.start + at..r.end + at;
                    out.push(match op {
                        Op::Msg { sid, payload } => Op::Msg {
                            sid,
                            payload: shift(payload),
                        },
                        Op::Info(r) => Op::Info(shift(r)),
                        other => other,
                    });
                    at += used;
                }
                Parsed::Incomplete => return out,
                Parsed::Invalid(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn reads_what_a_nats_server_sends() {
        let wire = b"INFO {\"max_payload\":1048576}\r\nPING\r\n+OK\r\nPONG\r\n\
                     MSG tc.live.a 7 5\r\nhello\r\nMSG tc.live.a 7 _INBOX.x 0\r\n\r\n\
                     HMSG tc.live.b 9 23 28\r\nNATS/1.0\r\nA: bcdefg\r\n\r\nhello\r\n\
                     -ERR 'Permissions Violation for Subscription to \"x\"'\r\n";
        let got = ops(wire);
        assert_eq!(got.len(), 8, "{got:?}");
        let Op::Info(r) = &got[0] else { panic!() };
        assert_eq!(&wire[r.clone()], b"{\"max_payload\":1048576}");
        assert_eq!(got[1..4], [Op::Ping, Op::Ok, Op::Pong]);
        let Op::Msg { sid: 7, payload } = &got[4] else {
            panic!()
        };
        let at = wire.windows(5).position(|w| w == b"hello").unwrap();
        assert_eq!(*payload, at..at + 5);
        assert!(matches!(&got[5], Op::Msg { sid: 7, payload } if payload.is_empty()));
        // HMSG: the payload is what follows the 23 bytes of headers.
        let Op::Msg { sid: 9, payload } = &got[6] else {
            panic!()
        };
        let hmsg = String::from_utf8_lossy(wire).find("HMSG").unwrap();
        let body = &wire[payload.clone()];
        assert_eq!(body, b"hello");
        assert!(payload.start > hmsg);
        assert_eq!(
            got[7],
            Op::Err("Permissions Violation for Subscription to \"x\"".into())
        );
    }

    #[test]
    fn every_split_point_waits_for_the_rest() {
        let wire = b"MSG tc.live.a 7 5\r\nhello\r\n";
        for cut in 0..wire.len() {
            assert_eq!(parse(&wire[..cut], 1024), Parsed::Incomplete, "cut {cut}");
        }
        assert!(matches!(parse(wire, 1024), Parsed::Op(Op::Msg { .. }, n) if n == wire.len()));
    }

    #[test]
    fn hostile_input_is_refused_before_it_is_buffered() {
        let invalid = |wire: &[u8]| matches!(parse(wire, 1024), Parsed::Invalid(_));
        // A size over max_payload is refused on the control line, before its bytes arrive.
        assert!(invalid(b"MSG a 1 1025\r\n"));
        assert!(invalid(b"MSG a 1 99999999999999999999\r\n"));
        assert!(invalid(b"MSG a 1 -5\r\n"));
        assert!(invalid(b"MSG a x 5\r\nhello\r\n"));
        assert!(invalid(b"MSG a 1\r\n"));
        assert!(invalid(b"MSG a 1 b c d 5\r\n"));
        assert!(invalid(b"HMSG a 1 10 5\r\n"));
        // Headers count apart from the payload: a republished message at max_payload is fine,
        // a header block over its own bound is not.
        assert_eq!(parse(b"HMSG a 1 100 1124\r\n", 1024), Parsed::Incomplete);
        assert!(invalid(b"HMSG a 1 100 1125\r\n"));
        assert!(invalid(b"HMSG a 1 65537 65537\r\n"));
        assert!(invalid(b"MSG a 1 5\r\nhelloXX"));
        assert!(invalid(b"PING\n"));
        assert!(invalid(b"GET / HTTP/1.1\r\n"));
        // No line end within the bound: refused, not buffered further.
        let long = vec![b'A'; CONTROL_LINE_MAX + 2];
        assert!(invalid(&long));
        assert_eq!(parse(&long[..CONTROL_LINE_MAX], 1024), Parsed::Incomplete);
    }
}
