//! A fault-injecting HTTP proxy in front of the test registry: resets a blob download
//! half-way, answers 500, corrupts bytes, or trickles them slowly; counts blob GETs.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default, Clone)]
pub struct Faults {
    /// Cut the next blob response larger than 100 KB after 64 KiB.
    pub truncate_next_big_blob: bool,
    /// Answer the next N blob GETs with 500.
    pub blob_500s: u32,
    /// Flip a byte in the middle of every blob larger than 100 KB.
    pub corrupt_big_blobs: bool,
    /// Send blob bodies in 16 KiB pieces, 50 ms apart.
    pub slow: bool,
}

#[derive(Default)]
struct State {
    faults: Faults,
    blob_gets: HashMap<String, u32>,
}

pub struct Proxy {
    pub addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, up) = (state.clone(), stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (st, up) = (st.clone(), up.clone());
                        std::thread::spawn(move || {
                            let _ = serve(conn, &up, &st);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { addr, state, stop }
    }

    pub fn set(&self, f: Faults) {
        self.state.lock().unwrap().faults = f;
    }

    /// GETs of blobs by digest so far.
    pub fn blob_gets(&self) -> HashMap<String, u32> {
        self.state.lock().unwrap().blob_gets.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_head(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut b)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    Ok(head)
}

fn serve(mut conn: TcpStream, upstream: &str, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    let head = read_head(&mut conn)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("").to_string();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let blob = (method == "GET")
        .then(|| path.split("/blobs/").nth(1).map(String::from))
        .flatten();
    let faults = {
        let mut s = state.lock().unwrap();
        if let Some(b) = &blob {
            *s.blob_gets.entry(b.clone()).or_default() += 1;
        }
        s.faults.clone()
    };
    if blob.is_some() && faults.blob_500s > 0 {
        state.lock().unwrap().faults.blob_500s -= 1;
        conn.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    // Forward with Connection: close, so that one connection carries one exchange.
    let mut fwd = format!("{first}\r\n");
    for l in lines.filter(|l| !l.is_empty()) {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        fwd.push_str(l);
        fwd.push_str("\r\n");
    }
    fwd.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(fwd.as_bytes())?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(resp.len());
    let (rhead, body) = resp.split_at(split);
    let mut body = body.to_vec();
    let big = blob.is_some() && body.len() > 100_000;
    if big && faults.truncate_next_big_blob {
        state.lock().unwrap().faults.truncate_next_big_blob = false;
        conn.write_all(rhead)?;
        conn.write_all(&body[..65536])?;
        conn.flush()?;
        conn.shutdown(Shutdown::Both)?;
        return Ok(());
    }
    if big && faults.corrupt_big_blobs {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    conn.write_all(rhead)?;
    if blob.is_some() && faults.slow {
        for piece in body.chunks(16 * 1024) {
            conn.write_all(piece)?;
            conn.flush()?;
            std::thread::sleep(Duration::from_millis(50));
        }
    } else {
        conn.write_all(&body)?;
    }
    Ok(())
}
