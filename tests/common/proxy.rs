//! Clients as they look behind a proxy: TCP connections from a chosen loopback source address
//! (127.0.0.0/8 is all local, so each test client can be its own "IP"), PROXY protocol headers
//! as HAProxy writes them, and the addresses the server says its connections have.

use std::net::{IpAddr, SocketAddr};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{
    MaybeTlsStream, client_async,
    tungstenite::{Error as WsError, client::IntoClientRequest, http::HeaderName},
};

use super::{DEADLINE, Server, Ws, recv_json};

/// A TCP connection to `to` from `from` (any port).
pub async fn tcp_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    tokio::time::timeout(DEADLINE, socket.connect(to))
        .await
        .expect("connect within the deadline")
        .expect("connect")
}

/// A PROXY protocol v1 header for a TCP connection from `src` to `dst`.
pub fn proxy_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A PROXY protocol v2 header (`PROXY` command, or `LOCAL` with `src` `None`), both addresses
/// of one family, with a TLV after them as HAProxy may send.
pub fn proxy_v2(src: Option<SocketAddr>, dst: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    let mut block = Vec::new();
    let (cmd, fam) = match (src, dst) {
        (None, _) => (0x20, 0x00),
        (Some(SocketAddr::V4(s)), SocketAddr::V4(d)) => {
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&d.ip().octets());
            (0x21, 0x11)
        }
        (Some(s), d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            block.extend_from_slice(&v6(s).octets());
            block.extend_from_slice(&v6(d).octets());
            (0x21, 0x21)
        }
    };
    if let Some(s) = src {
        block.extend_from_slice(&s.port().to_be_bytes());
        block.extend_from_slice(&dst.port().to_be_bytes());
    }
    // PP2_TYPE_ALPN "http/1.1": ignored by the server.
    block.extend_from_slice(&[0x01, 0, 8]);
    block.extend_from_slice(b"http/1.1");
    h.push(cmd);
    h.push(fam);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(&block);
    h
}

/// The `ip` of every WebSocket connection `GET /v1/connections` lists, in its order.
pub async fn connection_ips(server: &Server) -> Vec<String> {
    let (status, body) = server.http("GET", "/v1/connections?limit=1000", None).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ip"].as_str().unwrap().to_string())
        .collect()
}

/// The upgrade request of a WebSocket client, with extra header lines (`"Name: value\r\n"`).
pub fn upgrade_request(extra: &str) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// A WebSocket to `to` from `from`, sending `preamble` (a PROXY header) first and `headers`
/// with the upgrade: the open socket (its welcome read), or the refusal's HTTP status.
pub async fn ws_from(
    to: SocketAddr,
    from: &str,
    preamble: &[u8],
    headers: &[(&str, &str)],
) -> Result<Ws, u16> {
    let mut tcp = tcp_from(from.parse().unwrap(), to).await;
    tcp.write_all(preamble).await.unwrap();
    let mut req = format!("ws://{to}/ws").into_client_request().unwrap();
    for (k, v) in headers {
        let name: HeaderName = k.parse().unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    let upgrade = client_async(req, MaybeTlsStream::Plain(tcp));
    match tokio::time::timeout(DEADLINE, upgrade)
        .await
        .expect("upgrade")
    {
        Ok((mut ws, _)) => {
            assert_eq!(recv_json(&mut ws).await["op"], "welcome");
            Ok(ws)
        }
        Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("upgrade: {e}"),
    }
}
