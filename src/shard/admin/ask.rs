//! Admin requests: query parameters and bodies parsed and checked, then the question sent to
//! every shard it concerns (or, for `/v1/send`, the message sequenced like a publish).

use std::sync::Arc;

use serde::Deserialize;

use super::*;
use crate::shard::{
    State,
    http::{Answer, Handler, present},
    msg::{AdminRep, AdminReq, MeshMsg},
};
use crate::{
    frame::{SharedFrame, text_frame, unix_us},
    limits::{ADMIN_PAGE_DEFAULT, ADMIN_PAGE_MAX, CLOSE_REASON_BYTES_MAX},
    protocol::{self},
    publish::ReplyTo,
    pubsub::topic::validate_topic,
    ws::http::Request,
};

/// A request refused: status, error code, message.
pub(super) type Bad = (u16, &'static str, String);

/// What an admin request turned into.
pub(super) enum Asked {
    /// Ask `targets` (a shard mask), render when all answered.
    Gather(AdminQuery, Kind, u64),
    /// Waiting for a topic's owner (`/v1/send`).
    Waiting(futures_channel::oneshot::Receiver<Vec<u8>>),
}

pub(super) fn bad(message: impl Into<String>) -> Bad {
    (400, "bad_request", message.into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    #[serde(default, deserialize_with = "present")]
    data: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: Option<String>,
    conn: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    user: String,
    topic: String,
    #[serde(default, deserialize_with = "present")]
    data: bool,
    idem: Option<String>,
}

/// The query parameters `names` of `query` (percent-decoded); unknown or repeated ones are
/// refused. `token` (the admin credential) is taken by every endpoint and skipped here.
pub(super) fn params<const N: usize>(
    query: Option<&str>,
    names: [&str; N],
) -> Result<[Option<String>; N], Bad> {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if k == "token" {
            // The credential, already checked by `http_access` (every endpoint takes it).
            continue;
        }
        let Some(i) = names.iter().position(|n| *n == k) else {
            let known = if N == 0 {
                "none".into()
            } else {
                names.join(", ")
            };
            return Err(bad(format!(
                "unknown query parameter {k:?} (known: {known})"
            )));
        };
        if out[i].is_some() {
            return Err(bad(format!("query parameter {k:?} is repeated")));
        }
        out[i] = Some(crate::shard::auth::percent_decode(v));
    }
    Ok(out)
}

/// `limit`: default `ADMIN_PAGE_DEFAULT`, 1..=`ADMIN_PAGE_MAX`.
pub(super) fn page_limit(v: Option<String>) -> Result<usize, Bad> {
    match v {
        None => Ok(ADMIN_PAGE_DEFAULT),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=ADMIN_PAGE_MAX).contains(&n) => Ok(n),
            _ => Err(bad(format!(
                "limit must be an integer from 1 to {ADMIN_PAGE_MAX}, not {v:?}"
            ))),
        },
    }
}

/// A connection id `<shard>-<no>`.
pub(super) fn parse_conn_id(s: &str, shards: usize) -> Option<(usize, u64)> {
    let (shard, no) = s.split_once('-')?;
    let shard: usize = shard.parse().ok()?;
    (shard < shards).then_some(())?;
    Some((shard, no.parse().ok()?))
}

pub(super) fn required(v: Option<String>, name: &str) -> Result<String, Bad> {
    match v {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(bad(format!("query parameter {name:?} is required"))),
    }
}

pub(super) fn valid_topic(topic: &str) -> Result<(), Bad> {
    validate_topic(topic).map_err(|e| bad(format!("topic {topic:?}: {e}")))
}

/// The user of a user-message topic `user.<id>.…`.
pub(super) fn user_of_topic(topic: &str) -> Option<&str> {
    topic.strip_prefix("user.")?.split('.').next()
}

/// A JSON body: `T`, plus the raw `data` value if the body has one.
pub(super) fn parse_body<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    shape: &str,
) -> Result<(T, Option<Vec<u8>>), Bad> {
    let parsed: T =
        serde_json::from_slice(body).map_err(|e| bad(format!("body must be {shape}: {e}")))?;
    let data = protocol::scan_top_level(body)
        .data
        .map(|r| body[r].to_vec());
    Ok((parsed, data))
}

impl State {
    /// Routes an admin request (access already checked).
    pub(in crate::shard) fn admin_http(
        &mut self,
        key: u32,
        handler: Handler,
        req: &Request<'_>,
        body: &[u8],
    ) -> Answer {
        let keep_alive = req.keep_alive;
        let q = req.query;
        let all = self.all_shards();
        let asked: Result<Asked, Bad> = match handler {
            Handler::Stats => {
                params(q, []).map(|_| Asked::Gather(AdminQuery::Stats, Kind::Stats, all))
            }
            Handler::Connections => self.connections_query(q).map(|(f, limit)| {
                Asked::Gather(AdminQuery::Connections(f), Kind::Connections { limit }, all)
            }),
            Handler::Topics => params(q, ["prefix", "limit", "cursor"]).and_then(|[p, l, c]| {
                let limit = page_limit(l)?;
                let query = AdminQuery::Topics {
                    prefix: p.unwrap_or_default().into(),
                    after: c.filter(|c| !c.is_empty()).map(Into::into),
                    limit: limit + 1,
                };
                Ok(Asked::Gather(query, Kind::Topics { limit }, all))
            }),
            Handler::History => self.history_query(q),
            Handler::Cluster => {
                return match params(q, []) {
                    Ok(_) => self.cluster_status(keep_alive),
                    Err((status, code, message)) => {
                        self.respond_error(key, status, code, &message, keep_alive);
                        Answer::Responded { keep_alive }
                    }
                };
            }
            Handler::Presence => params(q, ["topic"]).and_then(|[t]| {
                let topic = required(t, "topic")?;
                valid_topic(&topic)?;
                let kind = Kind::Presence {
                    topic: topic.as_str().into(),
                };
                Ok(Asked::Gather(AdminQuery::Presence(topic.into()), kind, all))
            }),
            Handler::Online => params(q, ["limit", "cursor"]).and_then(|[l, c]| {
                let limit = page_limit(l)?;
                let query = AdminQuery::Online {
                    after: c.filter(|c| !c.is_empty()).map(Into::into),
                    limit: limit + 1,
                };
                Ok(Asked::Gather(query, Kind::Online { limit }, all))
            }),
            Handler::Broadcast => params(q, []).and_then(|_| self.broadcast_query(body, all)),
            Handler::Disconnect => params(q, []).and_then(|_| self.disconnect_query(body)),
            Handler::Send => params(q, []).and_then(|_| self.send_request(body, keep_alive)),
            other => unreachable!("{other:?} is not an admin route"),
        };
        match asked {
            Ok(Asked::Waiting(rx)) => Answer::Await(rx),
            Ok(Asked::Gather(query, kind, targets)) => {
                let gather = Gather::new(kind, self.cluster_step(&query));
                let (token, rx) = self.http_waiters.add(keep_alive, Some(Box::new(gather)));
                self.admin_send(token, query, targets);
                Answer::Await(rx)
            }
            Err((status, code, message)) => {
                self.respond_error(key, status, code, &message, keep_alive);
                Answer::Responded { keep_alive }
            }
        }
    }

    pub(super) fn connections_query(
        &self,
        q: Option<&str>,
    ) -> Result<(Box<ConnFilter>, usize), Bad> {
        let [user, topic, l, c] = params(q, ["user", "topic", "limit", "cursor"])?;
        let limit = page_limit(l)?;
        if let Some(t) = &topic {
            valid_topic(t)?;
        }
        let after = match c.filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(parse_conn_id(&c, self.shared.shards).ok_or_else(|| {
                bad(format!("cursor {c:?} is not a connection id like \"0-17\""))
            })?),
        };
        let filter = ConnFilter {
            user: user.filter(|u| !u.is_empty()).map(Into::into),
            topic: topic.map(Into::into),
            exact: false,
            after,
            limit: limit + 1,
        };
        Ok((Box::new(filter), limit))
    }

    pub(super) fn history_query(&self, q: Option<&str>) -> Result<Asked, Bad> {
        let [t, s, l] = params(q, ["topic", "since", "limit"])?;
        let topic = required(t, "topic")?;
        valid_topic(&topic)?;
        let since = match s {
            None => 0,
            Some(s) => s
                .parse()
                .map_err(|_| bad(format!("since must be a sequence number, not {s:?}")))?,
        };
        let limit = page_limit(l)?;
        let owner = crate::pubsub::topic::owner_shard(&topic, self.shared.shards);
        let query = AdminQuery::History {
            topic: topic.as_str().into(),
            since,
            limit,
            bytes_max: self.body_budget(),
            reverse: false,
        };
        let kind = Kind::History {
            topic: topic.into(),
        };
        Ok(Asked::Gather(query, kind, 1 << owner))
    }

    pub(super) fn broadcast_query(&self, body: &[u8], all: u64) -> Result<Asked, Bad> {
        let (b, data) = parse_body::<BroadcastBody>(body, "{\"data\":...}")?;
        let data = data
            .filter(|_| b.data)
            .ok_or_else(|| bad("\"data\" is required"))?;
        self.check_data(data.len())?;
        let mut json = Vec::with_capacity(data.len() + 48);
        json.extend_from_slice(b"{\"op\":\"broadcast\",\"ts\":");
        json.extend_from_slice(itoa::Buffer::new().format(unix_us()).as_bytes());
        json.extend_from_slice(b",\"data\":");
        json.extend_from_slice(&data);
        json.push(b'}');
        // Built once here; every shard gets the same `Arc`.
        let frame: SharedFrame = Arc::new(text_frame(&json));
        Ok(Asked::Gather(
            AdminQuery::Broadcast(frame),
            Kind::Count("connections"),
            all,
        ))
    }

    pub(super) fn check_data(&self, len: usize) -> Result<(), Bad> {
        let max = self.cfg.limits.publish_data_bytes_max;
        if len > max {
            return Err((
                413,
                "message_too_large",
                format!("data is {len} bytes; the limit is {max}"),
            ));
        }
        Ok(())
    }

    pub(super) fn disconnect_query(&self, body: &[u8]) -> Result<Asked, Bad> {
        let shape = "{\"user\":\"...\"} or {\"conn\":\"<shard>-<no>\"}, with optional \"code\" \
                     and \"reason\"";
        let (b, _) = parse_body::<DisconnectBody>(body, shape)?;
        let code = b.code.unwrap_or(4000);
        if !matches!(code, 1000 | 1001 | 1008 | 4000..=4999) {
            return Err(bad(format!(
                "code must be 1000, 1001, 1008 or 4000-4999, not {code}"
            )));
        }
        let reason = b.reason.unwrap_or_default();
        if reason.len() > CLOSE_REASON_BYTES_MAX {
            return Err(bad(format!(
                "reason is {} bytes; the limit is {CLOSE_REASON_BYTES_MAX}",
                reason.len()
            )));
        }
        let all = self.all_shards();
        let (user, conn_no, targets) = match (b.user, b.conn) {
            (Some(u), None) if !u.is_empty() => (Some(u.into()), None, all),
            (None, Some(c)) => {
                let (shard, no) = parse_conn_id(&c, self.shared.shards).ok_or_else(|| {
                    bad(format!("conn {c:?} is not a connection id like \"0-17\""))
                })?;
                (None, Some(no), 1 << shard)
            }
            _ => return Err(bad(format!("body must be {shape}"))),
        };
        let req = DisconnectReq {
            user,
            conn_no,
            code,
            reason: reason.into(),
        };
        let query = AdminQuery::Disconnect(Box::new(req));
        Ok(Asked::Gather(query, Kind::Count("disconnected"), targets))
    }

    /// `POST /v1/send`: sequenced by the topic's owner like a publish, answered like one.
    pub(super) fn send_request(&mut self, body: &[u8], keep_alive: bool) -> Result<Asked, Bad> {
        let shape = "{\"user\":\"<id>\",\"topic\":\"user.<id>. ...\",\"data\":...}";
        let (b, data) = parse_body::<SendBody>(body, shape)?;
        let data = data
            .filter(|_| b.data)
            .ok_or_else(|| bad("\"data\" is required"))?;
        if b.user.is_empty() || b.user.contains('.') || validate_topic(&b.user).is_err() {
            return Err(bad(format!(
                "user {:?} must be one topic segment ([A-Za-z0-9_:@-], no dots)",
                b.user
            )));
        }
        valid_topic(&b.topic)?;
        if !b.topic.starts_with(&format!("user.{}.", b.user)) {
            return Err(bad(format!(
                "topic {:?} must start with \"user.{}.\"",
                b.topic, b.user
            )));
        }
        self.check_data(data.len())?;
        protocol::check_idem(b.idem.as_deref()).map_err(bad)?;
        let (token, rx) = self.http_waiters.add(keep_alive, None);
        let idem = b.idem.map(Into::into);
        let reply = ReplyTo::Http {
            token: token as u32,
        };
        self.ingest(&b.topic, data, idem, reply, true);
        Ok(Asked::Waiting(rx))
    }

    /// Every shard, as a mask.
    pub(in crate::shard) fn all_shards(&self) -> u64 {
        u64::MAX >> (64 - self.shared.shards)
    }

    /// Bytes an admin answer's body may take: it is queued on the asking connection like any
    /// frame, under `limits.write_queue_bytes_max`; half of it leaves room for the rest.
    pub(super) fn body_budget(&self) -> usize {
        self.cfg.limits.write_queue_bytes_max / 2
    }

    /// Asks `targets` (a shard mask, this shard included or not) for their part.
    pub(in crate::shard) fn admin_send(&mut self, token: usize, query: AdminQuery, targets: u64) {
        if let Some(g) = self.gather_mut(token) {
            g.pending = targets.count_ones() as usize;
        }
        let mut peers = targets & !(1 << self.shard);
        while peers != 0 {
            let dst = peers.trailing_zeros() as usize;
            peers &= peers - 1;
            let req = AdminReq {
                from: self.shard as u8,
                token: token as u32,
                query: query.clone(),
            };
            // Control messages are never dropped by the mesh.
            let _ = self.mesh.send(dst, MeshMsg::Admin(Box::new(req)));
        }
        if targets & (1 << self.shard) != 0 {
            let part = self.admin_answer(query);
            self.admin_part(token as u32, part);
        }
    }

    pub(in crate::shard) fn gather_mut(&mut self, token: usize) -> Option<&mut Gather> {
        self.http_waiters.gather_mut(token)
    }

    /// A peer's question.
    pub(in crate::shard) fn admin_request_from_peer(&mut self, req: AdminReq) {
        let part = self.admin_answer(req.query);
        let rep = AdminRep {
            token: req.token,
            part,
        };
        let _ = self
            .mesh
            .send(req.from as usize, MeshMsg::AdminReply(Box::new(rep)));
    }

    /// One part of an answer arrived (from a peer or this shard).
    pub(in crate::shard) fn admin_part(&mut self, token: u32, part: AdminPart) {
        let Some(g) = self.gather_mut(token as usize) else {
            return;
        };
        g.parts.push(part);
        g.pending = g.pending.saturating_sub(1);
        if g.pending == 0 {
            self.admin_complete(token as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        let [a, b] = params(Some("user=al%40ice&limit=5"), ["user", "limit"]).unwrap();
        assert_eq!(a.as_deref(), Some("al@ice"));
        assert_eq!(b.as_deref(), Some("5"));
        assert!(
            params(Some("usr=x"), ["user"])
                .unwrap_err()
                .2
                .contains("usr")
        );
        assert!(params(Some("user=a&user=b"), ["user"]).is_err());
        assert!(params(Some("x=1"), []).is_err());
        assert!(params(None, ["user"]).unwrap()[0].is_none());
        assert_eq!(page_limit(None).unwrap(), ADMIN_PAGE_DEFAULT);
        assert_eq!(page_limit(Some("1000".into())).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "x", ""] {
            assert!(page_limit(Some(bad.into())).is_err(), "{bad}");
        }
        assert_eq!(parse_conn_id("1-17", 2), Some((1, 17)));
        assert_eq!(parse_conn_id("2-17", 2), None);
        assert_eq!(parse_conn_id("1-", 2), None);
        assert_eq!(user_of_topic("user.alice.orders"), Some("alice"));
        assert_eq!(user_of_topic("users.alice"), None);
    }
}
