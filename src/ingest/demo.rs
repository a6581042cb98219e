//! `--demo-feed`: a synthetic market for first runs and demos. Trades (`trades.<SYM>`), best
//! bid/offer (`bbo.<SYM>`) and one-minute klines (`kline.<SYM>.1m`) for ~20 symbols, prices on
//! a random walk with realistic tick sizes. Each shard runs the symbols assigned to it and
//! publishes through the normal ingest path, so the feed is sequenced, encoded once and
//! counted like any other publisher.

use std::{fmt::Write as _, rc::Rc, time::Duration};

use crate::{frame::unix_us, publish::ReplyTo, shard::Shard};

/// (symbol, start price, price decimals, quantity decimals)
const DEFAULT_SYMBOLS: [(&str, f64, usize, usize); 20] = [
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

/// Feed ticks per second; each tick publishes its share of `demo.rate_per_s`.
const TICKS_PER_S: u64 = 100;

struct Symbol {
    name: String,
    price: f64,
    price_dp: usize,
    qty_dp: usize,
    trade_id: u64,
    kline: Kline,
}

#[derive(Default)]
struct Kline {
    start_ms: u64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    /// Trades in the candle.
    trades: u64,
}

impl Kline {
    /// Starts a new candle at `price` when `now_ms` is in a new minute.
    fn roll(&mut self, now_ms: u64, price: f64) {
        let minute = now_ms / 60_000 * 60_000;
        if self.start_ms != minute {
            *self = Kline {
                start_ms: minute,
                open: price,
                high: price,
                low: price,
                close: price,
                volume: 0.0,
                trades: 0,
            };
        }
    }
}

fn symbols(configured: &[String]) -> Vec<Symbol> {
    let make = |name: &str, price: f64, price_dp, qty_dp| Symbol {
        name: name.to_string(),
        price,
        price_dp,
        qty_dp,
        trade_id: 1,
        kline: Kline::default(),
    };
    if configured.is_empty() {
        DEFAULT_SYMBOLS
            .iter()
            .map(|(n, p, pd, qd)| make(n, *p, *pd, *qd))
            .collect()
    } else {
        configured.iter().map(|n| make(n, 100.0, 2, 3)).collect()
    }
}

pub async fn demo_task(shard: Rc<Shard>) {
    let shards = shard.shared.shards;
    let cfg = &shard.shared.boot.demo;
    let all = symbols(&cfg.symbols);
    let total = all.len();
    let mut syms: Vec<Symbol> = all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % shards == shard.id)
        .map(|(_, s)| s)
        .collect();
    if syms.is_empty() {
        return;
    }
    let mut rng = fastrand::Rng::with_seed(seed(shard.id));
    // Each shard publishes its symbols' share of `demo.rate_per_s` (shards without a symbol
    // publish nothing, and lose nothing of the total). Klines come on top: one per symbol per
    // second.
    let per_tick = cfg.rate_per_s as f64 * syms.len() as f64 / total as f64 / TICKS_PER_S as f64;
    let mut budget = 0.0;
    let mut tick = 0u64;
    let mut interval = monoio::time::interval(Duration::from_millis(1000 / TICKS_PER_S));
    let mut data = String::with_capacity(256);
    let binance = cfg.format == crate::config::DemoFormat::Binance;
    let mut update_id = 0u64;
    loop {
        interval.tick().await;
        tick += 1;
        budget += per_tick;
        let mut st = shard.st.borrow_mut();
        if st.stopping {
            return;
        }
        let now_ms = unix_us() / 1000;
        while budget >= 1.0 {
            budget -= 1.0;
            let i = rng.usize(..syms.len());
            let s = &mut syms[i];
            // Random walk: ~1 bp steps, never below one tick.
            let step = (rng.f64() - 0.5) * 2e-4 * s.price;
            let tick_size = 10f64.powi(-(s.price_dp as i32));
            s.price = (s.price + step).max(tick_size);
            data.clear();
            let topic = if rng.u8(..10) < 7 {
                trade(&mut data, s, &mut rng, now_ms, binance);
                format!("trades.{}", s.name)
            } else {
                update_id += 1;
                bbo(
                    &mut data,
                    s,
                    &mut rng,
                    tick_size,
                    binance.then_some(update_id),
                );
                format!("bbo.{}", s.name)
            };
            st.ingest_publish(&topic, data.as_bytes().to_vec(), None, ReplyTo::None);
        }
        if tick % TICKS_PER_S == 0 {
            for s in syms.iter_mut() {
                data.clear();
                kline(&mut data, s, now_ms, binance);
                st.ingest_publish(
                    &format!("kline.{}.1m", s.name),
                    data.as_bytes().to_vec(),
                    None,
                    ReplyTo::None,
                );
            }
        }
        shard.finish(st);
    }
}

/// A seed per shard so shards walk different paths.
fn seed(shard: usize) -> u64 {
    0x7469_636b_6361_7374 ^ shard as u64
}

/// `binance`: Binance's trade event (`e`, `E`, `s`, `t`, `p`, `q`, `T`, `m`, `M`).
fn trade(out: &mut String, s: &mut Symbol, rng: &mut fastrand::Rng, now_ms: u64, binance: bool) {
    let qty = rng.f64() * rng.f64() * 10f64.powi(4 - s.qty_dp as i32).min(50.0)
        + 10f64.powi(-(s.qty_dp as i32));
    let side = if rng.bool() { "buy" } else { "sell" };
    s.trade_id += 1;
    let k = &mut s.kline;
    k.roll(now_ms, s.price);
    k.high = k.high.max(s.price);
    k.low = k.low.min(s.price);
    k.close = s.price;
    k.volume += qty;
    k.trades += 1;
    if binance {
        // `m`: the buyer is the maker, i.e. the taker sold.
        let _ = write!(
            out,
            r#"{{"e":"trade","E":{now_ms},"s":"{}","t":{},"p":"{:.pd$}","q":"{:.qd$}","T":{now_ms},"m":{},"M":true}}"#,
            s.name,
            s.trade_id,
            s.price,
            qty,
            side == "sell",
            pd = s.price_dp,
            qd = s.qty_dp,
        );
        return;
    }
    let _ = write!(
        out,
        r#"{{"s":"{}","p":"{:.pd$}","q":"{:.qd$}","side":"{}","id":{},"T":{}}}"#,
        s.name,
        s.price,
        qty,
        side,
        s.trade_id,
        now_ms,
        pd = s.price_dp,
        qd = s.qty_dp,
    );
}

/// `update_id`: Binance's book ticker (`u`, `s`, `b`, `B`, `a`, `A`) with this update id.
fn bbo(
    out: &mut String,
    s: &Symbol,
    rng: &mut fastrand::Rng,
    tick_size: f64,
    update_id: Option<u64>,
) {
    let spread = tick_size * (1 + rng.u32(..3)) as f64;
    let bid = s.price - spread / 2.0;
    let ask = bid + spread;
    if let Some(u) = update_id {
        let _ = write!(
            out,
            r#"{{"u":{u},"s":"{}","b":"{:.pd$}","B":"{:.qd$}","a":"{:.pd$}","A":"{:.qd$}"}}"#,
            s.name,
            bid.max(tick_size),
            rng.f64() * 5.0 + 0.01,
            ask,
            rng.f64() * 5.0 + 0.01,
            pd = s.price_dp,
            qd = s.qty_dp.max(2),
        );
        return;
    }
    let _ = write!(
        out,
        r#"{{"s":"{}","bp":"{:.pd$}","bq":"{:.qd$}","ap":"{:.pd$}","aq":"{:.qd$}"}}"#,
        s.name,
        bid.max(tick_size),
        rng.f64() * 5.0 + 0.01,
        ask,
        rng.f64() * 5.0 + 0.01,
        pd = s.price_dp,
        qd = s.qty_dp.max(2),
    );
}

/// `binance`: Binance's kline event (`e`, `E`, `s`, `k`: `t`, `T`, `s`, `i`, `f`, `L`, `o`, `c`,
/// `h`, `l`, `v`, `n`, `x`, `q`, `V`, `Q`, `B`).
fn kline(out: &mut String, s: &mut Symbol, now_ms: u64, binance: bool) {
    let k = &mut s.kline;
    k.roll(now_ms, s.price);
    if binance {
        let quote = k.volume * k.close;
        let _ = write!(
            out,
            r#"{{"e":"kline","E":{now_ms},"s":"{name}","k":{{"t":{t},"T":{end},"s":"{name}","i":"1m","f":{f},"L":{l},"o":"{:.pd$}","c":"{:.pd$}","h":"{:.pd$}","l":"{:.pd$}","v":"{:.qd$}","n":{n},"x":false,"q":"{quote:.2}","V":"{:.qd$}","Q":"{:.2}","B":"0"}}}}"#,
            k.open,
            k.close,
            k.high,
            k.low,
            k.volume,
            k.volume / 2.0,
            quote / 2.0,
            name = s.name,
            t = k.start_ms,
            end = k.start_ms + 59_999,
            f = s.trade_id.saturating_sub(k.trades).max(1),
            l = s.trade_id,
            n = k.trades,
            pd = s.price_dp,
            qd = s.qty_dp,
        );
        return;
    }
    let _ = write!(
        out,
        r#"{{"s":"{}","i":"1m","t":{},"o":"{:.pd$}","h":"{:.pd$}","l":"{:.pd$}","c":"{:.pd$}","v":"{:.qd$}","closed":false}}"#,
        s.name,
        k.start_ms,
        k.open,
        k.high,
        k.low,
        k.close,
        k.volume,
        pd = s.price_dp,
        qd = s.qty_dp,
    );
}
