//! Every HTTP route of the WebSocket port, in one table: the router looks requests up here
//! (method check, access rule, handler), and a test checks that the docs list each one.

use crate::ws::http::Method;

/// Who may call a route (beyond what its handler checks itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: the WebSocket upgrades, whose admission (`auth`) is part of the handler.
    Upgrade,
    /// `auth.health_metrics` decides (`open`, `loopback`, `admin`).
    HealthMetrics,
    /// An admin token, always (`POST /v1/publish`, the admin API).
    Admin,
}

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handler {
    Ws,
    Echo,
    Health,
    Ready,
    Metrics,
    Publish,
    Stats,
    Connections,
    Topics,
    History,
    Presence,
    Online,
    Cluster,
    Broadcast,
    Disconnect,
    Send,
    Dashboard,
}

/// One route: a path matched exactly (the query string is not part of it).
#[derive(Debug)]
pub(crate) struct Route {
    pub path: &'static str,
    /// `GET` routes also answer `HEAD` when `head` is set (headers only).
    pub method: Method,
    pub head: bool,
    pub access: Access,
    pub handler: Handler,
}

const fn route(
    path: &'static str,
    method: Method,
    head: bool,
    access: Access,
    handler: Handler,
) -> Route {
    Route {
        path,
        method,
        head,
        access,
        handler,
    }
}

use Access::*;
use Handler::*;
use Method::{Get, Post};

/// The routes, in the order the docs list them.
pub(crate) const ROUTES: &[Route] = &[
    route("/ws", Get, false, Upgrade, Ws),
    route("/echo", Get, false, Upgrade, Echo),
    route("/health", Get, true, HealthMetrics, Health),
    route("/ready", Get, true, HealthMetrics, Ready),
    route("/metrics", Get, true, HealthMetrics, Metrics),
    route("/v1/publish", Post, false, Admin, Publish),
    route("/v1/stats", Get, false, Admin, Stats),
    route("/v1/connections", Get, false, Admin, Connections),
    route("/v1/topics", Get, false, Admin, Topics),
    route("/v1/history", Get, false, Admin, History),
    route("/v1/presence", Get, false, Admin, Presence),
    route("/v1/online", Get, false, Admin, Online),
    route("/v1/cluster", Get, false, Admin, Cluster),
    route("/v1/broadcast", Post, false, Admin, Broadcast),
    route("/v1/disconnect", Post, false, Admin, Disconnect),
    route("/v1/send", Post, false, Admin, Send),
    route("/dashboard", Get, false, Admin, Dashboard),
];

/// The route of `path`; `/echo` exists only when `server.echo` is on.
pub(crate) fn find(path: &str, echo: bool) -> Option<&'static Route> {
    ROUTES
        .iter()
        .find(|r| r.path == path && (r.handler != Echo || echo))
}

impl Route {
    pub(crate) fn allows(&self, method: Method) -> bool {
        method == self.method || (self.head && method == Method::Head)
    }

    /// The `Allow` header of a 405.
    pub(crate) fn allow_header(&self) -> &'static str {
        match (self.method, self.head) {
            (Get, true) => "GET, HEAD",
            (Get, false) => "GET",
            _ => "POST",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dialects' configurable paths may not take a route: every route is one of
    /// `config::RESERVED_PATHS` or under one, which is what the configuration checks.
    #[test]
    fn every_route_is_reserved_from_the_dialects() {
        for r in ROUTES {
            assert!(
                crate::config::RESERVED_PATHS
                    .iter()
                    .any(|p| r.path == *p || r.path.starts_with(&format!("{p}/"))),
                "{} is not in config::RESERVED_PATHS",
                r.path
            );
        }
    }

    /// Every route is documented: the HTTP endpoint table of PROTOCOL.md names each path, and
    /// API.md each admin route.
    #[test]
    fn every_route_is_in_the_docs() {
        let protocol = include_str!("../../../docs/PROTOCOL.md");
        let api = include_str!("../../../docs/API.md");
        let table = protocol
            .split("## HTTP endpoints")
            .nth(1)
            .expect("PROTOCOL.md has an HTTP endpoints section");
        let table = table.split("\n\n").nth(2).expect("the endpoint table");
        for r in ROUTES {
            let name = r.path.rsplit('/').next().unwrap();
            assert!(
                table.contains(r.path) || table.contains(&format!("`/v1/{name}`")),
                "{} is missing from PROTOCOL.md's endpoint table",
                r.path
            );
            if r.access == Admin {
                assert!(
                    api.contains(&format!("{} {}", r.allow_header(), r.path)),
                    "{} is missing from API.md",
                    r.path
                );
            }
        }
    }

    #[test]
    fn lookup() {
        assert_eq!(find("/ws", false).unwrap().handler, Ws);
        assert!(find("/echo", false).is_none());
        assert_eq!(find("/echo", true).unwrap().handler, Echo);
        assert!(find("/ws/", false).is_none());
        let health = find("/health", false).unwrap();
        assert!(health.allows(Method::Head) && !health.allows(Method::Post));
        assert!(!find("/v1/send", false).unwrap().allows(Method::Get));
    }
}
