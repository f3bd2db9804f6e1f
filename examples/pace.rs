//! `pace`: a constant-rate (open-loop) HTTP/1.1 load generator for the latency figures of
//! `benches/load.sh`. wrk is closed-loop and its Lua `delay()` pacing sends in bursts, so a
//! proxy's p99 there mostly measures queueing behind a burst; wrk2 (which fixes that) is not
//! packaged in Debian. `pace` sends request *i* at `start + i / rate`, spread over the
//! connections, and measures each latency from when the request was *due*, not when it went
//! out — a stalled server therefore shows up in the percentiles instead of silently slowing
//! the generator (the "coordinated omission" correction wrk2 makes).
//!
//! ```text
//! cargo run --release --example pace -- --url http://127.0.0.1:8080/api/x --rate 5000 \
//!     --connections 32 --duration 10 --header "Authorization: Bearer ey..." --expect 200
//! ```
//! prints one line: `requests=… achieved_rps=… p50_us=… p90_us=… p99_us=… p999_us=… max_us=…
//! unexpected=… errors=…`. Loopback or any plain-HTTP URL; blocking sockets, one thread per
//! connection (precise enough at a few thousand requests a second).
#![allow(clippy::disallowed_methods)] // a load generator measures real time

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    authority: String,
    path: String,
    rate: f64,
    connections: usize,
    duration: Duration,
    headers: Vec<String>,
    expect: u16,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let (mut rate, mut connections, mut duration, mut expect) = (1000.0, 16usize, 10.0, 200u16);
    let mut headers = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--rate" => rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--connections" => connections = value()?.parse().map_err(|e| format!("--connections: {e}"))?,
            "--duration" => duration = value()?.parse().map_err(|e| format!("--duration: {e}"))?,
            "--header" => headers.push(value()?),
            "--expect" => expect = value()?.parse().map_err(|e| format!("--expect: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let rest = url.strip_prefix("http://").ok_or("--url must be http://host:port/path")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    };
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(rate) || connections == 0 || !positive(duration) {
        return Err("--rate, --connections and --duration must be positive".into());
    }
    Ok(Args { authority, path, rate, connections, duration: Duration::from_secs_f64(duration), headers, expect })
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    unexpected: u64,
    errors: u64,
}

/// Reads one response; returns its status. Handles `Content-Length` bodies only (what the
/// upstreams and the gateway send here); anything else is an error.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf).map_err(|e| bad(&e.to_string()))? {
            httparse::Status::Partial => continue,
            httparse::Status::Complete(head) => {
                let status = resp.code.unwrap_or(0);
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                    .ok_or_else(|| bad("no Content-Length"))?;
                while buf.len() < head + len {
                    let n = stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(bad("connection closed in the body"));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                return Ok(status);
            }
        }
    }
}

fn connect(authority: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(authority)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

fn run_connection(args: Arc<Args>, request: Arc<Vec<u8>>, index: usize, start: Instant) -> Tally {
    let mut tally = Tally::default();
    let period = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let mut due = start + Duration::from_secs_f64(index as f64 / args.rate);
    let end = start + args.duration;
    let mut stream = None;
    let mut buf = Vec::with_capacity(8192);
    while due < end {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let outcome = (|| {
            if stream.is_none() {
                stream = Some(connect(&args.authority)?);
            }
            // Just set above when it was missing.
            let s = stream.as_mut().expect("connected");
            s.write_all(&request)?;
            read_response(s, &mut buf)
        })();
        match outcome {
            Ok(status) => {
                let us = due.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                tally.latencies_us.push(us);
                if status != args.expect {
                    tally.unexpected += 1;
                }
            }
            Err(_) => {
                tally.errors += 1;
                stream = None;
            }
        }
        due += period;
    }
    tally
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("pace: {e}");
            return ExitCode::from(2);
        }
    };
    let mut request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", args.path, args.authority);
    for h in &args.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let request = Arc::new(request.into_bytes());
    // Start a little in the future so every thread is up before the first request is due.
    let start = Instant::now() + Duration::from_millis(100);
    let threads: Vec<_> = (0..args.connections)
        .map(|i| {
            let (args, request) = (args.clone(), request.clone());
            std::thread::spawn(move || run_connection(args, request, i, start))
        })
        .collect();
    let mut all = Tally::default();
    for t in threads {
        match t.join() {
            Ok(t) => {
                all.latencies_us.extend(t.latencies_us);
                all.unexpected += t.unexpected;
                all.errors += t.errors;
            }
            Err(_) => all.errors += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let n = all.latencies_us.len();
    let pct = |p: f64| if n == 0 { 0 } else { all.latencies_us[((n as f64 * p) as usize).min(n - 1)] };
    println!(
        "requests={n} achieved_rps={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} unexpected={} errors={}",
        n as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        all.latencies_us.last().copied().unwrap_or(0),
        all.unexpected,
        all.errors
    );
    if all.unexpected > 0 || all.errors > 0 || n == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
