//! A TCP proxy a test can cut and restore: it forwards every connection on its own loopback
//! port to a target port; [`TcpProxy::cut`] closes the connections it carries and refuses new
//! ones (each is accepted and closed at once) until [`TcpProxy::restore`]. Tests use it to
//! take a server out of a client's reach without stopping the server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// A running proxy; dropping it leaves its thread blocked in `accept` (a test process ends
/// soon after).
pub struct TcpProxy {
    /// The proxy's own port: what the client is given.
    pub port: u16,
    cut: Arc<AtomicBool>,
    /// Both ends of every connection carried so far (closed ones included; shutting those
    /// down again is harmless).
    carried: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:<port>` to `127.0.0.1:<target>`.
    #[must_use]
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let carried: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (accept_cut, accept_carried) = (Arc::clone(&cut), Arc::clone(&carried));
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accept_cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let streams = [&client, &server].map(|s| s.try_clone().expect("clone a proxied socket"));
                accept_carried.lock().expect("proxy lock").extend(streams);
                pipe(client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                pipe(server, client);
            }
        });
        Self { port, cut, carried }
    }

    /// Closes every carried connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.carried.lock().expect("proxy lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
