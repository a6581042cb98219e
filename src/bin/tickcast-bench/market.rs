//! `--data market`: publish data shaped like the server's demo feed (`src/ingest/demo.rs`)
//! instead of `"pad":"xxx…"`, so that compression sees what it would see in production:
//! repetitive JSON keys and symbols around prices and quantities that change every message.
//! A padding of one repeated byte compresses ~50×, random bytes not at all; neither says what
//! permessage-deflate does to trading data.
//!
//! Topic `bench.t<N>` carries symbol N mod 20 (the demo feed's 20 symbols, same price scales
//! and decimals), each on its own random walk. Every message starts with the send time
//! `"t":<ns>` the bench measures latency with (no other key of these messages is `"t"`).
//! - `--payload` under 200: a trade (70 %) or a best bid/offer (30 %), as the demo feed
//!   publishes them: ~110-130 bytes of `data` (`--payload` only picks this shape).
//! - 200 or more: an order-book update (`"b"`/`"a"` price levels, as exchanges send them),
//!   levels added until `data` reaches about `--payload` bytes.

use std::io::Write;

/// The demo feed's symbols: name, start price, price decimals, quantity decimals. A copy of
/// `DEFAULT_SYMBOLS` in `src/ingest/demo.rs`, which is private to the server; the bench keeps
/// its own so it does not change with the code under test.
const SYMBOLS: [(&str, f64, usize, usize); 20] = [
    ("BTCUSDT", 67_000.0, 2, 5),
    ("ETHUSDT", 3_400.0, 2, 4),
    ("SOLUSDT", 150.0, 3, 2),
    ("BNBUSDT", 590.0, 2, 3),
    ("XRPUSDT", 0.52, 4, 1),
    ("DOGEUSDT", 0.16, 5, 0),
    ("ADAUSDT", 0.45, 4, 1),
    ("AVAXUSDT", 35.0, 3, 2),
    ("LINKUSDT", 17.5, 3, 2),
    ("DOTUSDT", 7.2, 3, 2),
    ("TRXUSDT", 0.12, 5, 0),
    ("MATICUSDT", 0.70, 4, 1),
    ("LTCUSDT", 85.0, 2, 3),
    ("BCHUSDT", 480.0, 2, 3),
    ("ATOMUSDT", 8.9, 3, 2),
    ("NEARUSDT", 6.8, 3, 2),
    ("APTUSDT", 9.1, 3, 2),
    ("ARBUSDT", 1.1, 4, 1),
    ("OPUSDT", 2.4, 4, 1),
    ("UNIUSDT", 10.5, 3, 2),
];

/// Below this `--payload`, trades and best bid/offers; from it on, book updates.
const BOOK_FROM_BYTES: usize = 200;

/// One publisher thread's symbols on their random walks.
pub struct Market {
    rng: fastrand::Rng,
    price: [f64; 20],
    trade_id: [u64; 20],
}

impl Market {
    pub fn new(seed: u64) -> Market {
        Market {
            rng: fastrand::Rng::with_seed(seed ^ 0x6d61_726b_6574),
            price: SYMBOLS.map(|s| s.1),
            trade_id: [1_000_000; 20],
        }
    }

    /// Appends the `data` JSON of one message for topic `bench.t<topic>` sent at `t_ns`.
    pub fn write(&mut self, out: &mut Vec<u8>, topic: u32, t_ns: u64, payload: usize) {
        let i = topic as usize % SYMBOLS.len();
        let (name, _, pd, qd) = SYMBOLS[i];
        let tick = 10f64.powi(-(pd as i32));
        let step = (self.rng.f64() - 0.5) * 2e-4 * self.price[i];
        self.price[i] = (self.price[i] + step).max(tick);
        let p = self.price[i];
        let unix_ms = t_ns / 1_000_000 + 1_796_000_000_000;
        let _ = write!(out, r#"{{"t":{t_ns},"s":"{name}""#);
        if payload >= BOOK_FROM_BYTES {
            self.trade_id[i] += 1;
            let _ = write!(out, r#","u":{},"E":{unix_ms},"b":["#, self.trade_id[i]);
            let half = payload.saturating_sub(80) / 2;
            let mut level = 0;
            let mut side_start = out.len();
            for side in 0..2 {
                if side == 1 {
                    out.extend_from_slice(br#"],"a":["#);
                    side_start = out.len();
                    level = 0;
                }
                while out.len() - side_start < half || level == 0 {
                    if level > 0 {
                        out.push(b',');
                    }
                    let off = tick * (1 + level * (1 + self.rng.usize(..3))) as f64;
                    let lp = if side == 0 { p - off } else { p + off };
                    let q = self.rng.f64() * 20.0 + 10f64.powi(-(qd as i32));
                    let _ = write!(out, r#"["{:.pd$}","{:.qd$}"]"#, lp.max(tick), q);
                    level += 1;
                }
            }
            out.extend_from_slice(b"]}");
        } else if self.rng.u8(..10) < 7 {
            let q = self.rng.f64() * self.rng.f64() * 10f64.powi(4 - qd as i32).min(50.0)
                + 10f64.powi(-(qd as i32));
            let side = if self.rng.bool() { "buy" } else { "sell" };
            self.trade_id[i] += 1;
            let _ = write!(
                out,
                r#","p":"{p:.pd$}","q":"{q:.qd$}","side":"{side}","id":{},"T":{unix_ms}}}"#,
                self.trade_id[i]
            );
        } else {
            let spread = tick * f64::from(1 + self.rng.u32(..3));
            let bid = (p - spread / 2.0).max(tick);
            let qd = qd.max(2);
            let _ = write!(
                out,
                r#","bp":"{bid:.pd$}","bq":"{:.qd$}","ap":"{:.pd$}","aq":"{:.qd$}"}}"#,
                self.rng.f64() * 5.0 + 0.01,
                bid + spread,
                self.rng.f64() * 5.0 + 0.01,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_json_with_the_send_time_first() {
        let mut m = Market::new(1);
        for payload in [100, 1000, 4000] {
            for topic in 0..50 {
                let mut out = Vec::new();
                m.write(&mut out, topic, 123_456_789, payload);
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(v["t"], 123_456_789);
                assert!(out.starts_with(b"{\"t\":123456789,"));
                let n = out.len();
                if payload < BOOK_FROM_BYTES {
                    assert!((60..160).contains(&n), "{n}");
                } else {
                    assert!(n > payload * 8 / 10 && n < payload * 12 / 10 + 60, "{n}");
                }
            }
        }
    }
}
