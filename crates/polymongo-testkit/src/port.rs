//! Free-port selection on the loopback interface.

use std::net::{Ipv4Addr, TcpListener};

use crate::error::TestKitError;

/// Asks the kernel for a free port on 127.0.0.1 and releases it at once.
///
/// Another process may take the port before the server binds it; the callers
/// detect that ("address already in use" in the server's log) and retry with
/// a new port.
pub(crate) fn free_port() -> Result<u16, TestKitError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| TestKitError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| TestKitError::io("reading the address of a bound socket", e))?
        .port();
    drop(listener);
    Ok(port)
}

/// True when a server log says its listening socket could not be bound.
pub(crate) fn log_says_port_in_use(log: &str) -> bool {
    // Python: "OSError: [Errno 98] error while attempting to bind on address
    // ('127.0.0.1', 1234): address already in use"; mongod: "Address already in use".
    let lower = log.to_ascii_lowercase();
    lower.contains("address already in use") || lower.contains("errno 98")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port().expect("free port");
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port is free again");
    }

    #[test]
    fn recognises_python_and_mongod_messages() {
        assert!(log_says_port_in_use(
            "OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 5): address already in use"
        ));
        assert!(log_says_port_in_use(
            r#"{"msg":"Error setting up listener","attr":{"error":{"code":9001,"codeName":"SocketException","errmsg":"Address already in use"}}}"#
        ));
        assert!(!log_says_port_in_use("Listening on 127.0.0.1:5"));
    }
}
