//! Loopback ports for test servers.

use std::net::TcpListener;

use anyhow::Result;

/// A TCP port on 127.0.0.1 that was free a moment ago. Another process can take it before the
/// caller binds it; callers that can, should bind port 0 themselves instead.
pub fn free_tcp_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// A port P with P+1 also free (swtpm's data and control ports over TCP).
pub fn free_tcp_port_pair() -> Result<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind(("127.0.0.1", 0))?;
        let port = first.local_addr()?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", next)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free TCP port pair on 127.0.0.1")
}
