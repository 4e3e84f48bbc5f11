//! This machine's own address, for roles that publish where they can be
//! reached (the executor's node address, the proxy's redirect target).

use std::net::{IpAddr, Ipv4Addr, UdpSocket};

/// The source address of the default route (no packet is sent), else 127.0.0.1.
pub fn primary_ipv4() -> Ipv4Addr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        // A documentation address (TEST-NET-3): routed by the default route.
        s.connect("203.0.113.1:9")?;
        Ok(s.local_addr()?.ip())
    };
    match probe() {
        Ok(IpAddr::V4(ip)) if !ip.is_unspecified() => ip,
        _ => Ipv4Addr::LOCALHOST,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_primary_address_is_usable() {
        let ip = super::primary_ipv4();
        assert!(!ip.is_unspecified() && !ip.is_multicast(), "{ip}");
    }
}
