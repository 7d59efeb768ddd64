//! A tiny STUN responder (RFC 5389 Binding only) on the test internet: miniupnpd 2.3 accepts a
//! reserved outside address only once STUN has shown it is not behind another NAT.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::lab::{STUN_IP, in_namespace};

/// STUN's magic cookie.
const MAGIC_COOKIE: u32 = 0x2112_a442;

/// Binding request and success response message types.
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;

/// MAPPED-ADDRESS and XOR-MAPPED-ADDRESS attribute types.
const MAPPED_ADDRESS: u16 = 0x0001;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// Answers Binding requests on `STUN_IP:3478` inside `ns` until `stop` is set.
pub fn spawn(ns: &str, stop: Arc<AtomicBool>) {
    let socket = in_namespace(ns, || {
        UdpSocket::bind((STUN_IP.parse::<IpAddr>().expect("ip"), 3478)).expect("stun bind")
    });
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if let Some(reply) = answer(&buf[..len], from) {
                let _ = socket.send_to(&reply, from);
            }
        }
    });
}

/// The Binding success response to `request` from `from`, if it is a Binding request.
fn answer(request: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if request.len() < 20 {
        return None;
    }
    let kind = u16::from_be_bytes([request[0], request[1]]);
    let cookie = u32::from_be_bytes(request[4..8].try_into().ok()?);
    if kind != BINDING_REQUEST || cookie != MAGIC_COOKIE {
        return None;
    }
    let SocketAddr::V4(from) = from else {
        return None;
    };
    let mut attrs = Vec::new();
    let port = from.port();
    let ip = u32::from(*from.ip());
    for (kind, port, ip) in [
        (MAPPED_ADDRESS, port, ip),
        (
            XOR_MAPPED_ADDRESS,
            port ^ (MAGIC_COOKIE >> 16) as u16,
            ip ^ MAGIC_COOKIE,
        ),
    ] {
        attrs.extend_from_slice(&kind.to_be_bytes());
        attrs.extend_from_slice(&8u16.to_be_bytes());
        attrs.extend_from_slice(&[0, 1]); // reserved, IPv4
        attrs.extend_from_slice(&port.to_be_bytes());
        attrs.extend_from_slice(&ip.to_be_bytes());
    }
    let mut reply = Vec::with_capacity(20 + attrs.len());
    reply.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    reply.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    reply.extend_from_slice(&request[4..20]); // cookie and transaction id
    reply.extend_from_slice(&attrs);
    Some(reply)
}
