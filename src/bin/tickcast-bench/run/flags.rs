//! The target flags: `--url` (one server, or the nodes of a cluster), `--server-pid` and
//! `--source-ips`, parsed and checked: targets and source addresses outside 127.0.0.0/8 and ::1
//! are refused unless `--allow-remote` is given.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use super::Res;
use crate::plan::Target;

/// Parses `ws://host:port/path` (or `wss://`) and refuses targets outside 127.0.0.0/8 and ::1
/// unless allowed.
pub fn parse_target(url: &str, allow_remote: bool) -> Res<Target> {
    let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err("--url must start with ws:// or wss://".into()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or(format!("{authority} resolves to nothing"))?;
    if !allow_remote && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing non-loopback target {addr} (pass --allow-remote)"
        ));
    }
    Ok(Target {
        addr,
        host: authority.to_owned(),
        path: path.to_owned(),
        tls,
    })
}

/// Parses `--url`: one URL, or several comma-separated (the nodes of a cluster).
pub fn parse_targets(urls: &str, allow_remote: bool) -> Res<Vec<Target>> {
    let v = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| parse_target(u, allow_remote))
        .collect::<Res<Vec<_>>>()?;
    if v.is_empty() {
        return Err("--url: no URL".into());
    }
    Ok(v)
}

/// Parses `--server-pid`: comma-separated process ids.
pub fn parse_pids(s: &str) -> Res<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|e| format!("--server-pid {p}: {e}")))
        .collect()
}

pub fn parse_source_ips(s: &str, allow_remote: bool) -> Res<Vec<IpAddr>> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: IpAddr = part
            .parse()
            .map_err(|e| format!("--source-ips {part}: {e}"))?;
        if !allow_remote && !ip.is_loopback() {
            return Err(format!("refusing non-loopback source address {ip}"));
        }
        v.push(ip);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_loopback() {
        let t = parse_target("ws://127.0.0.1:9000/ws", false).unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(t.path, "/ws");
        assert_eq!(t.host, "127.0.0.1:9000");
        assert!(parse_target("ws://127.0.0.9:1/ws", false).is_ok());
        assert!(parse_target("ws://10.0.0.1:9000/ws", false).is_err());
        assert!(parse_target("http://127.0.0.1:9000/ws", false).is_err());
        let t = parse_target("wss://127.0.0.1:9443/ws", false).unwrap();
        assert!(t.tls && t.addr.port() == 9443);
        assert!(!parse_target("ws://127.0.0.1:9000/ws", false).unwrap().tls);
        assert!(
            parse_source_ips("127.0.0.1, 127.0.0.2", false)
                .unwrap()
                .len()
                == 2
        );
        assert!(parse_source_ips("192.168.1.1", false).is_err());
        let ts = parse_targets("ws://127.0.0.1:9001/ws, ws://127.0.0.1:9002/ws", false).unwrap();
        assert_eq!(ts.len(), 2);
        assert_eq!(ts[1].host, "127.0.0.1:9002");
        assert!(parse_targets("ws://127.0.0.1:9001/ws,ws://10.0.0.1:1/ws", false).is_err());
        assert!(parse_targets(" , ", false).is_err());
        assert_eq!(parse_pids("12, 34").unwrap(), vec![12, 34]);
        assert!(parse_pids("").unwrap().is_empty());
        assert!(parse_pids("x").is_err());
    }
}
