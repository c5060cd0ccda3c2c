//! `X-Forwarded-For`: never panics; the answer is the peer or an address named in the
//! header that is not a trusted proxy; an untrusted peer is never overridden; a
//! malformed hop means the peer.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mgpass::http::forwarded_client;
use std::net::IpAddr;

fn ip(b: u8) -> IpAddr {
    match b % 4 {
        0 => "10.0.0.1".parse().unwrap(),
        1 => "10.0.0.2".parse().unwrap(),
        2 => "::1".parse().unwrap(),
        _ => "203.0.113.9".parse().unwrap(),
    }
}

fuzz_target!(|data: &[u8]| {
    // [peer selector, trusted mask, header values separated by '\n'...]
    if data.len() < 2 {
        return;
    }
    let peer = ip(data[0]);
    let trusted: Vec<IpAddr> = (0..4u8)
        .filter(|i| data[1] & (1 << i) != 0)
        .map(ip)
        .collect();
    let mut headers = HeaderMap::new();
    let mut listed: Vec<IpAddr> = Vec::new();
    let mut malformed = false;
    for value in data[2..].split(|&b| b == b'\n') {
        let Ok(v) = HeaderValue::from_bytes(value) else {
            continue;
        };
        match v.to_str() {
            Ok(s) => {
                for part in s.split(',') {
                    match part.trim().parse::<IpAddr>() {
                        Ok(ip) => listed.push(ip),
                        Err(_) => malformed = true,
                    }
                }
            }
            Err(_) => malformed = true,
        }
        headers.append("x-forwarded-for", v);
        // Unrelated headers must not matter.
        headers.append("forwarded", HeaderValue::from_static("for=192.0.2.1"));
    }
    let got = forwarded_client(peer, &trusted, &headers);
    if !trusted.contains(&peer) || malformed {
        assert_eq!(got, peer);
    } else if got != peer {
        assert!(listed.contains(&got), "{got} is not in the header");
        assert!(!trusted.contains(&got), "{got} is a trusted proxy");
        // The right-most untrusted hop.
        assert_eq!(
            Some(&got),
            listed.iter().rev().find(|ip| !trusted.contains(ip))
        );
    } else {
        assert!(listed.iter().all(|ip| trusted.contains(ip)) || listed.contains(&peer));
    }
});
