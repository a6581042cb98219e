//! The admin answer, rendered once every shard's part is in (and, for `/v1/topics`, the
//! second round asked); the JSON helpers and paged lists it is written with.

use std::{collections::HashMap, mem, sync::Arc};

use super::*;
use crate::protocol::{epoch_str, push_json_str};
use crate::shard::State;

impl State {
    /// Every part is in: render, or start the next round.
    pub(in crate::shard) fn admin_complete(&mut self, token: usize) {
        if self.cluster_parts_pending(token) {
            return;
        }
        let Some(g) = self.gather_mut(token) else {
            return;
        };
        let parts = mem::take(&mut g.parts);
        let kind = mem::replace(&mut g.kind, Kind::Count(""));
        if let Kind::Centrifugo(ask) = kind {
            self.http_waiters.take(token);
            return self.centrifugo_answer(*ask, parts);
        }
        let budget = self.body_budget();
        let mut out = Vec::with_capacity(1024);
        out.push(b'{');
        match kind {
            Kind::Stats => self.render_stats(&mut out, parts),
            Kind::Connections { limit } => {
                let mut conns = collect_parts(parts, |p| match p {
                    AdminPart::Connections(v) => Some(v),
                    _ => None,
                });
                conns.sort_unstable_by_key(|c| (c.shard, c.no));
                let list = List::new("connections", conns.len(), limit, budget);
                list.render(
                    &mut out,
                    |out, i| render_conn(out, &conns[i]),
                    |i| conn_id(conns[i].shard, conns[i].no),
                );
            }
            Kind::Count(field) => {
                let n: usize = collect_parts(parts, |p| match p {
                    AdminPart::Count(n) => Some(vec![n]),
                    _ => None,
                })
                .iter()
                .sum();
                num(&mut out, field, n as u64);
            }
            Kind::Topics { limit } => {
                let mut topics = collect_parts(parts, |p| match p {
                    AdminPart::Topics(v) => Some(v),
                    _ => None,
                });
                first_by(&mut topics, limit + 1, |a, b| a.name.cmp(&b.name));
                if !topics.is_empty() {
                    let names: Arc<[Box<str>]> =
                        topics.iter().take(limit).map(|t| t.name.clone()).collect();
                    if let Some(g) = self.gather_mut(token) {
                        g.kind = Kind::TopicSubscribers {
                            page: topics,
                            limit,
                        };
                    }
                    let all = self.all_shards();
                    return self.admin_send(token, AdminQuery::Subscribers(names), all);
                }
                out.extend_from_slice(b"\"topics\":[],\"next_cursor\":null");
            }
            Kind::TopicSubscribers {
                page: topics,
                limit,
            } => {
                let mut counts = vec![0; topics.len().min(limit)];
                for p in parts {
                    if let AdminPart::Subscribers(v) = p {
                        for (a, b) in counts.iter_mut().zip(v) {
                            *a += b;
                        }
                    }
                }
                let list = List::new("topics", topics.len(), limit, budget);
                list.render(
                    &mut out,
                    |out, i| render_topic(out, &topics[i], counts[i]),
                    |i| topics[i].name.to_string(),
                );
            }
            Kind::History { topic } => match parts.into_iter().next() {
                Some(AdminPart::History(Some(h))) => {
                    string(&mut out, "topic", &topic);
                    string(&mut out, "epoch", &epoch_str(h.epoch));
                    num(&mut out, "seq", h.seq);
                    key(&mut out, "messages");
                    out.push(b'[');
                    for f in &h.frames {
                        out.extend_from_slice(frame_payload(f.bytes()));
                        out.push(b',');
                    }
                    end(&mut out, b']');
                }
                _ => {
                    let message = format!(
                        "topic {topic:?} is unknown: nothing holds it (never published, or forgotten with no history, subscriber or idem key left)"
                    );
                    let body = crate::shard::http::error_body("not_found", &message);
                    return self.admin_respond(token, 404, body);
                }
            },
            Kind::Presence { topic } => {
                let (users, anonymous) = merge_users(parts);
                string(&mut out, "topic", &topic);
                let list = List::new("users", users.len(), usize::MAX, budget);
                let cut = list.items(&mut out, |out, i| render_user(out, &users[i]));
                num(&mut out, "anonymous", anonymous as u64);
                if cut {
                    out.extend_from_slice(b"\"truncated\":true,");
                }
                self.render_missing_nodes(token, &mut out);
            }
            Kind::Centrifugo(_) => unreachable!("answered above"),
            Kind::Online { limit } => {
                self.render_missing_nodes(token, &mut out);
                let (users, _) = merge_users(parts);
                let list = List::new("users", users.len(), limit, budget);
                list.render(
                    &mut out,
                    |out, i| render_user(out, &users[i]),
                    |i| users[i].0.to_string(),
                );
            }
        }
        end(&mut out, b'}');
        self.admin_respond(token, 200, out);
    }

    pub(super) fn render_stats(&self, out: &mut Vec<u8>, parts: Vec<AdminPart>) {
        let mut shards = collect_parts(parts, |p| match p {
            AdminPart::Stats(s) => Some(vec![*s]),
            _ => None,
        });
        shards.sort_by_key(|s| s.shard);
        let mut total = Snapshot::default();
        for s in &shards {
            total.add(s);
        }
        num(out, "shards", self.shared.shards as u64);
        num(out, "uptime_s", self.shared.started.elapsed().as_secs());
        key(out, "total");
        out.push(b'{');
        total.render(out);
        end(out, b'}');
        out.push(b',');
        key(out, "per_shard");
        out.push(b'[');
        for s in &shards {
            out.push(b'{');
            num(out, "shard", s.shard as u64);
            s.render(out);
            end(out, b'}');
            out.push(b',');
        }
        end(out, b']');
    }

    pub(in crate::shard) fn admin_respond(&mut self, token: usize, status: u16, body: Vec<u8>) {
        if let Some(waiter) = self.http_waiters.take(token) {
            waiter.respond(status, "application/json", &body);
        }
    }
}

/// The items of every part `pick` takes.
pub(crate) fn collect_parts<T>(
    parts: Vec<AdminPart>,
    pick: impl Fn(AdminPart) -> Option<Vec<T>>,
) -> Vec<T> {
    parts.into_iter().filter_map(pick).flatten().collect()
}

/// Keeps the first `n` of `v` by `cmp`, sorted.
pub(crate) fn first_by<T>(v: &mut Vec<T>, n: usize, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) {
    if v.len() > n {
        v.select_nth_unstable_by(n, &cmp);
        v.truncate(n);
    }
    v.sort_unstable_by(cmp);
}

pub(crate) fn push_conn_id(out: &mut Vec<u8>, shard: usize, no: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(shard).as_bytes());
    out.push(b'-');
    out.extend_from_slice(itoa::Buffer::new().format(no).as_bytes());
}

/// `"k":`
pub(crate) fn key(out: &mut Vec<u8>, k: &str) {
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `"k":v,`
pub(crate) fn num(out: &mut Vec<u8>, k: &str, v: u64) {
    key(out, k);
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    out.push(b',');
}

/// `"k":"v",`
pub(crate) fn string(out: &mut Vec<u8>, k: &str, v: &str) {
    key(out, k);
    push_json_str(out, v);
    out.push(b',');
}

/// Closes an object or array whose members each end in `,`.
pub(crate) fn end(out: &mut Vec<u8>, close: u8) {
    if out.last() == Some(&b',') {
        out.pop();
    }
    out.push(close);
}

pub(crate) fn conn_id(shard: usize, no: u64) -> String {
    format!("{shard}-{no}")
}

/// A JSON array member `"<name>":[…],` of `len` items: at most `limit`, and no more than fit
/// in `budget` bytes of the body (one at least).
pub(crate) struct List {
    name: &'static str,
    len: usize,
    limit: usize,
    budget: usize,
}

impl List {
    pub(super) fn new(name: &'static str, len: usize, limit: usize, budget: usize) -> List {
        List {
            name,
            len,
            limit,
            budget,
        }
    }

    /// The items, then `"next_cursor"`: the cursor of the last item rendered when some were
    /// left out, else `null`.
    pub(super) fn render(
        &self,
        out: &mut Vec<u8>,
        render: impl FnMut(&mut Vec<u8>, usize),
        cursor: impl Fn(usize) -> String,
    ) {
        let shown = self.items_shown(out, render);
        key(out, "next_cursor");
        if shown < self.len {
            push_json_str(out, &cursor(shown - 1));
        } else {
            out.extend_from_slice(b"null");
        }
        out.push(b',');
    }

    /// The items only; true when some were left out.
    pub(super) fn items(&self, out: &mut Vec<u8>, render: impl FnMut(&mut Vec<u8>, usize)) -> bool {
        self.items_shown(out, render) < self.len
    }

    pub(super) fn items_shown(
        &self,
        out: &mut Vec<u8>,
        mut render: impl FnMut(&mut Vec<u8>, usize),
    ) -> usize {
        key(out, self.name);
        out.push(b'[');
        let mut shown = 0;
        while shown < self.len.min(self.limit) {
            let mark = out.len();
            render(out, shown);
            out.push(b',');
            if out.len() > self.budget && shown > 0 {
                out.truncate(mark);
                break;
            }
            shown += 1;
        }
        end(out, b']');
        out.push(b',');
        shown
    }
}

pub(crate) fn render_conn(out: &mut Vec<u8>, c: &ConnInfo) {
    out.push(b'{');
    string(out, "conn", &conn_id(c.shard, c.no));
    string(out, "ip", &c.ip.to_string());
    key(out, "user");
    match &c.user {
        Some(u) => push_json_str(out, u),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b',');
    num(out, "shard", c.shard as u64);
    num(out, "age_s", c.age_s);
    key(out, "subscriptions");
    out.push(b'[');
    for t in &c.subs {
        push_json_str(out, t);
        out.push(b',');
    }
    end(out, b']');
    out.push(b',');
    key(out, "filters");
    out.push(b'{');
    for (pattern, filter) in &c.filters {
        push_json_str(out, pattern);
        out.push(b':');
        // Canonical filter text: JSON made by the filter module, not client bytes.
        out.extend_from_slice(filter.as_bytes());
        out.push(b',');
    }
    end(out, b'}');
    out.push(b',');
    num(out, "queued_bytes", c.queued_bytes as u64);
    num(out, "skipped", u64::from(c.skipped));
    key(out, "tls");
    out.extend_from_slice(if c.tls { b"true" } else { b"false" });
    out.push(b',');
    key(out, "protocol");
    push_json_str(out, c.protocol);
    out.push(b'}');
}

pub(crate) fn render_topic(out: &mut Vec<u8>, t: &TopicInfo, subscribers: usize) {
    out.push(b'{');
    string(out, "topic", &t.name);
    num(out, "seq", t.seq);
    string(out, "epoch", &epoch_str(t.epoch));
    num(out, "history", t.history as u64);
    num(out, "subscribers", subscribers as u64);
    end(out, b'}');
}

pub(crate) fn render_user(out: &mut Vec<u8>, (user, n): &(Box<str>, usize)) {
    out.push(b'{');
    string(out, "user", user);
    num(out, "connections", *n as u64);
    end(out, b'}');
}

/// Users over all shards' parts (connection counts summed), sorted by name, and the
/// anonymous connections.
pub(crate) fn merge_users(parts: Vec<AdminPart>) -> (Vec<(Box<str>, usize)>, usize) {
    let mut users: HashMap<Box<str>, usize> = HashMap::new();
    let mut anon = 0;
    for p in parts {
        if let AdminPart::Users {
            users: u,
            anonymous,
        } = p
        {
            anon += anonymous;
            for (name, n) in u {
                *users.entry(name).or_default() += n;
            }
        }
    }
    let mut users: Vec<(Box<str>, usize)> = users.into_iter().collect();
    users.sort_unstable();
    (users, anon)
}

/// The payload of an unmasked server frame (its JSON).
pub(crate) fn frame_payload(bytes: &[u8]) -> &[u8] {
    let header = match bytes.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    bytes.get(header..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_stop_at_the_limit_or_the_budget_with_a_cursor() {
        let render = |out: &mut Vec<u8>, i: usize| out.extend_from_slice(format!("{i}").as_bytes());
        let mut out = b"{".to_vec();
        List::new("x", 5, 3, 1 << 20).render(&mut out, render, |i| i.to_string());
        end(&mut out, b'}');
        assert_eq!(out, br#"{"x":[0,1,2],"next_cursor":"2"}"#);
        let mut out = b"{".to_vec();
        List::new("x", 3, 3, 1 << 20).render(&mut out, render, |i| i.to_string());
        end(&mut out, b'}');
        assert_eq!(out, br#"{"x":[0,1,2],"next_cursor":null}"#);
        // A budget of 10 bytes holds `{"x":[0,1` and no more; one item always fits.
        let mut out = b"{".to_vec();
        List::new("x", 5, 100, 10).render(&mut out, render, |i| i.to_string());
        end(&mut out, b'}');
        assert_eq!(out, br#"{"x":[0,1],"next_cursor":"1"}"#);
        let mut out = b"{".to_vec();
        assert!(List::new("x", 2, 100, 1).items(&mut out, render));
        assert_eq!(out, br#"{"x":[0],"#);
    }

    #[test]
    fn history_messages_are_frame_payloads() {
        use crate::frame::text_frame;
        let frame = crate::frame::encode_data_frame("t.a", 3, 7, br#"{"k":1}"#, 1);
        assert_eq!(
            frame_payload(frame.bytes()),
            br#"{"topic":"t.a","seq":3,"ts":7,"data":{"k":1}}"#
        );
        let big = "x".repeat(70_000);
        let frame = text_frame(big.as_bytes());
        assert_eq!(frame_payload(frame.bytes()), big.as_bytes());
    }
}
