//! A small GDB remote serial protocol client, as much as percpu-bed needs
//! to drive `qemu-alpha -g SOCKET` (QEMU 7.2's user-mode gdbstub).
//!
//! Layers, each usable and tested on its own:
//!
//! * the codec: [`frame`] builds `$payload#cs` (escaping `$ # } *`),
//!   [`Decoder`] turns a byte stream into [`Event`]s (acks, packets with
//!   escapes and run-length encoding undone, checksum failures, garbage),
//!   [`parse_stop_reply`] understands `S`/`T`/`W`/`X`;
//! * [`GdbClient`]: requests with `+`/`-` acknowledgement and bounded
//!   retransmission, `qSupported` (PacketSize), `?`, `g`/`G`, `m`/`M`
//!   (chunked to the stub's PacketSize), `Z0`/`z0`, `c`, `s`, `k`, and the
//!   `0x03` interrupt byte.
//!
//! Every wait has a deadline: a silent or babbling stub gives
//! [`EngineError::Timeout`] naming what was awaited, a malformed one
//! [`EngineError::Protocol`]; nothing here panics on input from the wire
//! and no packet may grow beyond [`MAX_PACKET`] bytes.
//!
//! What QEMU 7.2's user-mode stub does (checked against qemu-alpha 7.2):
//! it answers `qSupported` with `PacketSize=1000;qXfer:auxv:read+;
//! vContSupported+;multiprocess+`, has no `p` and no `qXfer:siginfo`,
//! stops with `T<sig>thread:p<pid>.<tid>;`, undoes escapes and run-length
//! encoding in what it receives, and does NOT read the socket while the
//! guest runs, so the `0x03` interrupt byte is only seen at the next stop
//! (the engine interrupts with a host SIGINT instead; see `qemu_alpha`).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::EngineError;

/// Largest packet body (raw, before decoding) the decoder accepts; longer
/// input is reported as [`Event::Overflow`] and skipped.
pub const MAX_PACKET: usize = 1 << 20;

/// How often a request is retransmitted after a `-` before giving up.
const MAX_RETRANSMITS: u32 = 3;

/// GDB's own signal numbers (not the host's) as they appear in stop replies.
pub mod gdb_signal {
    pub const SIGINT: u8 = 2;
    pub const SIGILL: u8 = 4;
    pub const SIGTRAP: u8 = 5;
    pub const SIGABRT: u8 = 6;
    pub const SIGFPE: u8 = 8;
    pub const SIGKILL: u8 = 9;
    pub const SIGBUS: u8 = 10;
    pub const SIGSEGV: u8 = 11;
    pub const SIGSYS: u8 = 12;

    /// A printable name for diagnostics.
    pub fn name(sig: u8) -> String {
        match sig {
            SIGINT => "SIGINT".into(),
            SIGILL => "SIGILL".into(),
            SIGTRAP => "SIGTRAP".into(),
            SIGABRT => "SIGABRT".into(),
            SIGFPE => "SIGFPE".into(),
            SIGKILL => "SIGKILL".into(),
            SIGBUS => "SIGBUS".into(),
            SIGSEGV => "SIGSEGV".into(),
            SIGSYS => "SIGSYS".into(),
            n => format!("signal {n}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------

/// The modulo-256 sum GDB uses as packet checksum.
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

/// True for the bytes that must be escaped inside a packet body.
fn needs_escape(b: u8) -> bool {
    matches!(b, b'$' | b'#' | b'}' | b'*')
}

/// Frame `payload` as `$body#cs`, escaping `$ # } *` as `}` + (byte ^ 0x20).
/// Plain command payloads never contain those bytes, so escaping is a no-op
/// for them; binary payloads (`X`) need it.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.push(b'$');
    for &b in payload {
        if needs_escape(b) {
            out.push(b'}');
            out.push(b ^ 0x20);
        } else {
            out.push(b);
        }
    }
    let cs = checksum(&out[1..]);
    out.push(b'#');
    out.extend_from_slice(hex_byte(cs).as_bytes());
    out
}

fn hex_byte(b: u8) -> String {
    format!("{b:02x}")
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lower-case hex of `data`.
pub fn hex_encode(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push_str(&hex_byte(*b));
    }
    s
}

/// Decode hex text (even length, digits only).
pub fn hex_decode(text: &[u8]) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("odd-length hex ({} digits)", text.len()));
    }
    text.chunks(2)
        .enumerate()
        .map(|(i, p)| match (hex_val(p[0]), hex_val(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(format!("non-hex digit at byte {i}: {:?}", String::from_utf8_lossy(p))),
        })
        .collect()
}

/// Parse a hex number (1..=16 digits).
pub fn parse_hex_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &c| Some(acc << 4 | u64::from(hex_val(c)?)))
}

/// Undo escapes (`}` x ^ 0x20) and run-length encoding (`c*n`: `n - 29`
/// more copies of `c`) of a received packet body.
pub fn decode_body(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'}' => {
                let Some(&next) = raw.get(i + 1) else {
                    return Err("escape character `}` at the end of the packet".into());
                };
                out.push(next ^ 0x20);
                i += 2;
            }
            b'*' => {
                let Some(&prev) = out.last() else {
                    return Err("run-length marker `*` with nothing to repeat".into());
                };
                let Some(&count) = raw.get(i + 1) else {
                    return Err("run-length marker `*` at the end of the packet".into());
                };
                if !(29 + 3..=126).contains(&count) {
                    return Err(format!("run-length count byte {count:#04x} out of range"));
                }
                let n = usize::from(count - 29);
                if out.len() + n > MAX_PACKET {
                    return Err("run-length expansion exceeds the packet limit".into());
                }
                out.extend(std::iter::repeat_n(prev, n));
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// What the [`Decoder`] recognised in the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `+`
    Ack,
    /// `-` (the peer wants the last packet again)
    Nack,
    /// A well-formed packet, decoded (escapes and run-lengths undone).
    Packet(Vec<u8>),
    /// A packet whose checksum did not match (to be answered with `-`).
    BadChecksum { expected: u8, got: String },
    /// A packet with a correct checksum that could not be decoded.
    Malformed(String),
    /// A packet body longer than [`MAX_PACKET`]; skipped.
    Overflow,
    /// The interrupt byte 0x03 (a stub never sends it; reported anyway).
    Interrupt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Body,
    Sum1,
    Sum2(u8),
}

/// Incremental packet decoder: feed it bytes, it yields [`Event`]s.
/// Bytes outside packets other than `+ - 0x03` are counted as garbage and
/// dropped; a `$` inside a body restarts the packet (a real body never
/// holds a raw `$`).
#[derive(Debug)]
pub struct Decoder {
    state: State,
    body: Vec<u8>,
    overflowed: bool,
    /// Bytes dropped outside packets (diagnostics).
    pub garbage: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { state: State::Idle, body: Vec::new(), overflowed: false, garbage: 0 }
    }

    /// Forget any partial packet.
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.body.clear();
        self.overflowed = false;
    }

    /// Feed one byte.
    pub fn push(&mut self, b: u8) -> Option<Event> {
        match self.state {
            State::Idle => match b {
                b'+' => Some(Event::Ack),
                b'-' => Some(Event::Nack),
                0x03 => Some(Event::Interrupt),
                b'$' => {
                    self.state = State::Body;
                    self.body.clear();
                    self.overflowed = false;
                    None
                }
                _ => {
                    self.garbage += 1;
                    None
                }
            },
            State::Body => match b {
                b'#' => {
                    self.state = State::Sum1;
                    None
                }
                b'$' => {
                    // A new packet starts: the partial one was garbage.
                    self.garbage += self.body.len() as u64 + 1;
                    self.body.clear();
                    self.overflowed = false;
                    None
                }
                _ => {
                    if self.body.len() >= MAX_PACKET {
                        self.overflowed = true;
                    } else {
                        self.body.push(b);
                    }
                    None
                }
            },
            State::Sum1 => {
                self.state = State::Sum2(b);
                None
            }
            State::Sum2(first) => {
                self.state = State::Idle;
                let body = std::mem::take(&mut self.body);
                if std::mem::take(&mut self.overflowed) {
                    return Some(Event::Overflow);
                }
                let expected = checksum(&body);
                let got = [first, b];
                match (hex_val(first), hex_val(b)) {
                    (Some(h), Some(l)) if h << 4 | l == expected => Some(match decode_body(&body) {
                        Ok(p) => Event::Packet(p),
                        Err(e) => Event::Malformed(e),
                    }),
                    _ => Some(Event::BadChecksum { expected, got: String::from_utf8_lossy(&got).into_owned() }),
                }
            }
        }
    }
}

/// Why the target stopped (or ended).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReply {
    /// `S sig` or `T sig key:value;...`: stopped with GDB signal `signal`.
    Signal { signal: u8, info: Vec<(String, String)> },
    /// `W status`: the process exited.
    Exited { status: u8 },
    /// `X sig`: the process was killed by a signal.
    Terminated { signal: u8 },
}

impl StopReply {
    /// A `key:value` field of a `T` reply.
    pub fn field(&self, key: &str) -> Option<&str> {
        match self {
            StopReply::Signal { info, .. } => info.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// Parse a stop reply packet (`S`, `T`, `W`, `X`).
pub fn parse_stop_reply(p: &[u8]) -> Result<StopReply, String> {
    let shown = || String::from_utf8_lossy(&p[..p.len().min(64)]).into_owned();
    let two_hex = |s: &[u8]| -> Result<u8, String> {
        match s {
            [h, l, ..] => match (hex_val(*h), hex_val(*l)) {
                (Some(h), Some(l)) => Ok(h << 4 | l),
                _ => Err(format!("bad signal/status digits in stop reply {:?}", shown())),
            },
            _ => Err(format!("truncated stop reply {:?}", shown())),
        }
    };
    match p.first() {
        Some(b'S') => Ok(StopReply::Signal { signal: two_hex(&p[1..])?, info: Vec::new() }),
        Some(b'T') => {
            let signal = two_hex(&p[1..])?;
            let mut info = Vec::new();
            for field in p[3..].split(|&b| b == b';').filter(|f| !f.is_empty()) {
                let text = String::from_utf8_lossy(field);
                match text.split_once(':') {
                    Some((k, v)) => info.push((k.to_string(), v.to_string())),
                    None => info.push((text.into_owned(), String::new())),
                }
            }
            Ok(StopReply::Signal { signal, info })
        }
        Some(b'W') => Ok(StopReply::Exited { status: two_hex(&p[1..])? }),
        Some(b'X') => Ok(StopReply::Terminated { signal: two_hex(&p[1..])? }),
        _ => Err(format!("not a stop reply: {:?}", shown())),
    }
}

/// A stub error reply `Enn`?
fn error_reply(p: &[u8]) -> Option<&str> {
    if p.len() == 3 && p[0] == b'E' && hex_val(p[1]).is_some() && hex_val(p[2]).is_some() {
        std::str::from_utf8(p).ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Transport and client
// ---------------------------------------------------------------------------

/// A byte stream with a settable read timeout (a Unix socket, or a mock).
pub trait Transport: Read + Write {
    /// Reads block at most `timeout`; a timed-out read returns an error of
    /// kind `WouldBlock` or `TimedOut`.
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()>;
}

impl Transport for UnixStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        UnixStream::set_read_timeout(self, Some(timeout.max(Duration::from_millis(1))))
    }
}

/// What the stub advertised in its `qSupported` reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Maximum packet size the stub accepts (bytes, including framing).
    pub packet_size: usize,
    /// The raw `;`-separated feature list.
    pub raw: Vec<String>,
}

impl Features {
    pub fn supports(&self, name: &str) -> bool {
        self.raw.iter().any(|f| f == &format!("{name}+"))
    }
}

/// A GDB remote client over `T`.
pub struct GdbClient<T: Transport> {
    io: T,
    engine: &'static str,
    timeout: Duration,
    decoder: Decoder,
    events: VecDeque<Event>,
    packet_size: usize,
    features: Features,
    stats: Stats,
    /// The resume packet (`c`/`s`) in flight and when it was sent.
    resumed: Option<(u8, Instant)>,
}

/// Round trips by command letter: how many and how long (request sent to
/// reply received; for `c` and `s`, to the stop reply).  The engines'
/// cost model is measured with these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `(letter, count, total nanoseconds)`, in first-use order.
    pub by_command: Vec<(u8, u64, u64)>,
}

impl Stats {
    fn add(&mut self, letter: u8, d: Duration) {
        let nanos = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        match self.by_command.iter_mut().find(|(l, _, _)| *l == letter) {
            Some(e) => {
                e.1 += 1;
                e.2 = e.2.saturating_add(nanos);
            }
            None => self.by_command.push((letter, 1, nanos)),
        }
    }

    /// Total round trips.
    pub fn round_trips(&self) -> u64 {
        self.by_command.iter().map(|e| e.1).sum()
    }

    /// Count and total time of one command letter.
    pub fn of(&self, letter: u8) -> (u64, Duration) {
        self.by_command
            .iter()
            .find(|e| e.0 == letter)
            .map(|e| (e.1, Duration::from_nanos(e.2)))
            .unwrap_or((0, Duration::ZERO))
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for &(l, n, ns) in &self.by_command {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            let avg = if n == 0 { 0.0 } else { ns as f64 / n as f64 / 1000.0 };
            write!(f, "`{}` {n}x {:.1} ms ({avg:.1} us each)", l as char, ns as f64 / 1e6)?;
        }
        Ok(())
    }
}

/// Default timeout for one reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl<T: Transport> GdbClient<T> {
    /// A client over a connected transport; `engine` names the engine in
    /// errors; `timeout` bounds every wait for a reply.
    pub fn new(io: T, engine: &'static str, timeout: Duration) -> Self {
        GdbClient {
            io,
            engine,
            timeout,
            decoder: Decoder::new(),
            events: VecDeque::new(),
            // Until the handshake says otherwise, the protocol's minimum.
            packet_size: 400,
            features: Features::default(),
            stats: Stats::default(),
            resumed: None,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The transport (for tests).
    pub fn transport(&mut self) -> &mut T {
        &mut self.io
    }

    fn protocol(&self, reason: impl Into<String>) -> EngineError {
        EngineError::Protocol { engine: self.engine, reason: reason.into() }
    }

    fn timed_out(&self, what: &str, waited: Duration) -> EngineError {
        EngineError::Timeout { engine: self.engine, what: what.to_string(), millis: waited.as_millis() as u64 }
    }

    /// Next decoded event before `deadline`; `Ok(None)` when the deadline
    /// passes first.
    fn next_event(&mut self, deadline: Instant, what: &str) -> Result<Option<Event>, EngineError> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.io
                .set_read_timeout(deadline - now)
                .map_err(|e| self.protocol(format!("cannot set read timeout: {e}")))?;
            match self.io.read(&mut buf) {
                Ok(0) => return Err(self.protocol(format!("connection closed while waiting for {what}"))),
                Ok(n) => {
                    for &b in &buf[..n] {
                        if let Some(e) = self.decoder.push(b) {
                            self.events.push_back(e);
                        }
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.protocol(format!("read failed while waiting for {what}: {e}"))),
            }
        }
    }

    fn send_raw(&mut self, bytes: &[u8], what: &str) -> Result<(), EngineError> {
        self.io
            .write_all(bytes)
            .and_then(|_| self.io.flush())
            .map_err(|e| self.protocol(format!("write failed sending {what}: {e}")))
    }

    /// Send one packet and wait for its `+`; retransmit on `-`.
    pub fn send_packet(&mut self, payload: &[u8]) -> Result<(), EngineError> {
        let framed = frame(payload);
        let what = format!("ack of `{}`", preview(payload));
        let mut tries = 0;
        self.send_raw(&framed, &what)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.next_event(deadline, &what)? {
                None => return Err(self.timed_out(&what, self.timeout)),
                Some(Event::Ack) => return Ok(()),
                Some(Event::Nack) => {
                    tries += 1;
                    if tries > MAX_RETRANSMITS {
                        return Err(self.protocol(format!("stub rejected `{}` {tries} times", preview(payload))));
                    }
                    self.send_raw(&framed, &what)?;
                }
                // A reply before the ack: the ack was lost or the stub does
                // not ack; keep the packet for the reply reader.
                Some(e @ Event::Packet(_)) => {
                    self.events.push_front(e);
                    return Ok(());
                }
                Some(Event::Interrupt) | Some(Event::Overflow) | Some(Event::Malformed(_)) => {}
                Some(Event::BadChecksum { .. }) => self.send_raw(b"-", "nack")?,
            }
        }
    }

    /// Wait for one packet until `deadline` (acknowledging it); `Ok(None)`
    /// on timeout.
    fn recv_packet_until(&mut self, deadline: Instant, what: &str) -> Result<Option<Vec<u8>>, EngineError> {
        loop {
            match self.next_event(deadline, what)? {
                None => return Ok(None),
                Some(Event::Packet(p)) => {
                    self.send_raw(b"+", "ack")?;
                    return Ok(Some(p));
                }
                Some(Event::BadChecksum { .. }) => self.send_raw(b"-", "nack")?,
                Some(Event::Malformed(reason)) => {
                    self.send_raw(b"+", "ack")?;
                    return Err(self.protocol(format!("malformed packet while waiting for {what}: {reason}")));
                }
                Some(Event::Overflow) => {
                    return Err(self.protocol(format!("oversized packet while waiting for {what}")));
                }
                Some(Event::Ack) | Some(Event::Nack) | Some(Event::Interrupt) => {}
            }
        }
    }

    /// Wait for one packet (default timeout).
    pub fn recv_packet(&mut self, what: &str) -> Result<Vec<u8>, EngineError> {
        let deadline = Instant::now() + self.timeout;
        match self.recv_packet_until(deadline, what)? {
            Some(p) => Ok(p),
            None => Err(self.timed_out(what, self.timeout)),
        }
    }

    /// Send a request and return its reply.
    pub fn request(&mut self, payload: &[u8]) -> Result<Vec<u8>, EngineError> {
        let t = Instant::now();
        self.send_packet(payload)?;
        let r = self.recv_packet(&format!("reply to `{}`", preview(payload)));
        self.stats.add(payload.first().copied().unwrap_or(b'?'), t.elapsed());
        r
    }

    /// Round trips so far, by command.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Send a request that must be answered `OK`.
    fn request_ok(&mut self, payload: &[u8]) -> Result<(), EngineError> {
        let r = self.request(payload)?;
        if r == b"OK" {
            Ok(())
        } else {
            Err(self.protocol(format!("`{}` answered {:?}, expected OK", preview(payload), preview(&r))))
        }
    }

    /// `qSupported`: learn PacketSize.
    pub fn handshake(&mut self) -> Result<Features, EngineError> {
        let r = self.request(b"qSupported:swbreak+")?;
        let raw: Vec<String> = String::from_utf8_lossy(&r).split(';').map(str::to_string).collect();
        let mut features = Features { packet_size: self.packet_size, raw };
        for f in &features.raw {
            if let Some(v) = f.strip_prefix("PacketSize=") {
                match parse_hex_u64(v.as_bytes()) {
                    Some(n) if (64..=MAX_PACKET as u64).contains(&n) => features.packet_size = n as usize,
                    _ => return Err(self.protocol(format!("unusable PacketSize {v:?} in qSupported reply"))),
                }
            }
        }
        self.packet_size = features.packet_size;
        self.features = features.clone();
        Ok(features)
    }

    /// `?`: why the target is stopped now.
    pub fn halt_reason(&mut self) -> Result<StopReply, EngineError> {
        let r = self.request(b"?")?;
        parse_stop_reply(&r).map_err(|e| self.protocol(e))
    }

    /// `g`: all registers, as the target's raw bytes.
    pub fn read_registers(&mut self) -> Result<Vec<u8>, EngineError> {
        let r = self.request(b"g")?;
        if let Some(e) = error_reply(&r) {
            return Err(self.protocol(format!("`g` failed: {e}")));
        }
        hex_decode(&r).map_err(|e| self.protocol(format!("`g` reply: {e}")))
    }

    /// `G`: write all registers.
    pub fn write_registers(&mut self, regs: &[u8]) -> Result<(), EngineError> {
        let mut p = b"G".to_vec();
        p.extend_from_slice(hex_encode(regs).as_bytes());
        self.request_ok(&p)
    }

    /// Bytes of target data per `m`/`M` packet.
    fn chunk(&self) -> usize {
        // `M` + 16 + `,` + 16 + `:` + 2 per byte, framing `$ # cs`: keep 64
        // bytes of slack and the result a multiple of 8.
        ((self.packet_size.saturating_sub(64)) / 2).max(8) & !7
    }

    /// `m`: read target memory (chunked).
    pub fn read_memory(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, EngineError> {
        let mut out = Vec::with_capacity(len);
        let chunk = self.chunk();
        while out.len() < len {
            let at = addr.wrapping_add(out.len() as u64);
            let n = chunk.min(len - out.len());
            let r = self.request(format!("m{at:x},{n:x}").as_bytes())?;
            let mem_err =
                |reason: String| EngineError::Memory { engine: self.engine, op: "read", addr: at, len: n, reason };
            if let Some(e) = error_reply(&r) {
                return Err(mem_err(format!("stub answered {e}")));
            }
            let bytes = hex_decode(&r).map_err(|e| self.protocol(format!("`m` reply: {e}")))?;
            if bytes.is_empty() || bytes.len() > n {
                return Err(mem_err(format!("stub returned {} bytes for a {n}-byte read", bytes.len())));
            }
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    /// `M`: write target memory (chunked).
    pub fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), EngineError> {
        let chunk = self.chunk();
        let mut done = 0;
        while done < data.len() {
            let at = addr.wrapping_add(done as u64);
            let n = chunk.min(data.len() - done);
            let mut p = format!("M{at:x},{n:x}:").into_bytes();
            p.extend_from_slice(hex_encode(&data[done..done + n]).as_bytes());
            let r = self.request(&p)?;
            if r != b"OK" {
                return Err(EngineError::Memory {
                    engine: self.engine,
                    op: "write",
                    addr: at,
                    len: n,
                    reason: format!("stub answered {:?}", preview(&r)),
                });
            }
            done += n;
        }
        Ok(())
    }

    /// `Z0,addr,kind`: software breakpoint.
    pub fn insert_breakpoint(&mut self, addr: u64, kind: u32) -> Result<(), EngineError> {
        self.request_ok(format!("Z0,{addr:x},{kind:x}").as_bytes())
    }

    /// `z0,addr,kind`.
    pub fn remove_breakpoint(&mut self, addr: u64, kind: u32) -> Result<(), EngineError> {
        self.request_ok(format!("z0,{addr:x},{kind:x}").as_bytes())
    }

    /// Send `c` (continue) without waiting for the stop.
    pub fn resume_continue(&mut self) -> Result<(), EngineError> {
        self.resumed = Some((b'c', Instant::now()));
        self.send_packet(b"c")
    }

    /// Send `s` (single step) without waiting for the stop.
    pub fn resume_step(&mut self) -> Result<(), EngineError> {
        self.resumed = Some((b's', Instant::now()));
        self.send_packet(b"s")
    }

    /// Wait up to `within` for a stop reply; `Ok(None)` if none came.
    /// Console output packets (`O...`) are skipped.
    pub fn wait_stop(&mut self, within: Duration) -> Result<Option<StopReply>, EngineError> {
        let deadline = Instant::now() + within;
        loop {
            match self.recv_packet_until(deadline, "a stop reply")? {
                None => return Ok(None),
                Some(p) if p.first() == Some(&b'O') && p.len() > 1 && p != b"OK" => continue,
                Some(p) => {
                    if let Some((l, t)) = self.resumed.take() {
                        self.stats.add(l, t.elapsed());
                    }
                    return parse_stop_reply(&p).map(Some).map_err(|e| self.protocol(e));
                }
            }
        }
    }

    /// `s` and wait (default timeout) for the stop.
    pub fn step(&mut self) -> Result<StopReply, EngineError> {
        self.resume_step()?;
        match self.wait_stop(self.timeout)? {
            Some(s) => Ok(s),
            None => Err(self.timed_out("the stop after a single step", self.timeout)),
        }
    }

    /// Send the interrupt byte 0x03.
    pub fn interrupt(&mut self) -> Result<(), EngineError> {
        self.send_raw(&[0x03], "interrupt")
    }

    /// `k`: kill the target. Best effort: the stub may close the connection
    /// without answering.
    pub fn kill(&mut self) {
        let _ = self.send_raw(&frame(b"k"), "kill");
    }
}

/// A short printable form of a packet for messages.
fn preview(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(&p[..p.len().min(48)]).into_owned();
    if p.len() > 48 {
        format!("{s}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted peer: `input` is what the stub "sends"; reads with nothing
    /// left time out like a socket with a read timeout.
    struct Mock {
        input: VecDeque<u8>,
        output: Vec<u8>,
        /// Bytes returned per read (to exercise partial reads).
        burst: usize,
    }

    impl Mock {
        fn new(input: &[u8]) -> Mock {
            Mock { input: input.iter().copied().collect(), output: Vec::new(), burst: 3 }
        }
    }

    impl Read for Mock {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return Err(io::Error::new(io::ErrorKind::WouldBlock, "no data"));
            }
            let n = buf.len().min(self.burst).min(self.input.len());
            for b in buf.iter_mut().take(n) {
                *b = self.input.pop_front().unwrap();
            }
            Ok(n)
        }
    }

    impl Write for Mock {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for Mock {
        fn set_read_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    fn client(input: &[u8]) -> GdbClient<Mock> {
        GdbClient::new(Mock::new(input), "test", Duration::from_millis(50))
    }

    fn decode_all(bytes: &[u8]) -> Vec<Event> {
        let mut d = Decoder::new();
        bytes.iter().filter_map(|&b| d.push(b)).collect()
    }

    #[test]
    fn frame_and_checksum() {
        assert_eq!(frame(b"OK"), b"$OK#9a");
        assert_eq!(frame(b"g"), b"$g#67");
        assert_eq!(frame(b""), b"$#00");
        // Escaped: `#` becomes `}` 0x03, checksum over the escaped bytes.
        let f = frame(b"a#b");
        assert_eq!(&f[..5], b"$a}\x03b");
        assert_eq!(decode_all(&f), vec![Event::Packet(b"a#b".to_vec())]);
    }

    #[test]
    fn escapes_roundtrip_all_bytes() {
        let payload: Vec<u8> = (0..=255u8).collect();
        assert_eq!(decode_all(&frame(&payload)), vec![Event::Packet(payload)]);
    }

    #[test]
    fn run_length_decoding() {
        // "0* " = '0' plus (0x20 - 29) = 3 more copies.
        assert_eq!(decode_body(b"0* ").unwrap(), b"0000");
        assert_eq!(decode_body(b"a1*\"b").unwrap(), b"a111111b");
        assert!(decode_body(b"*!").is_err());
        assert!(decode_body(b"a*").is_err());
        assert!(decode_body(b"a*\x01").is_err());
        assert!(decode_body(b"a}").is_err());
        let body = b"0*}";
        let mut raw = b"$".to_vec();
        raw.extend_from_slice(body);
        raw.push(b'#');
        raw.extend_from_slice(hex_byte(checksum(body)).as_bytes());
        assert_eq!(decode_all(&raw), vec![Event::Packet(vec![b'0'; 97])]);
    }

    #[test]
    fn decoder_acks_garbage_and_bad_checksums() {
        let ev = decode_all(b"xx+-\x03junk$OK#9a$OK#00$OK#zz");
        assert_eq!(ev[0], Event::Ack);
        assert_eq!(ev[1], Event::Nack);
        assert_eq!(ev[2], Event::Interrupt);
        assert_eq!(ev[3], Event::Packet(b"OK".to_vec()));
        assert!(matches!(ev[4], Event::BadChecksum { expected: 0x9a, .. }));
        assert!(matches!(ev[5], Event::BadChecksum { .. }));
        assert_eq!(ev.len(), 6);
        // A restart inside a body drops the partial packet.
        assert_eq!(decode_all(b"$abc$OK#9a"), vec![Event::Packet(b"OK".to_vec())]);
    }

    #[test]
    fn decoder_truncated_input_yields_nothing() {
        for cut in 0..6 {
            let ev = decode_all(&b"$OK#9a"[..cut]);
            assert!(ev.is_empty(), "{cut}: {ev:?}");
        }
    }

    #[test]
    fn decoder_overflow_is_bounded() {
        let mut d = Decoder::new();
        d.push(b'$');
        for _ in 0..MAX_PACKET + 10 {
            assert_eq!(d.push(b'a'), None);
        }
        d.push(b'#');
        d.push(b'0');
        assert_eq!(d.push(b'0'), Some(Event::Overflow));
        assert_eq!(decode_all(b"$OK#9a").len(), 1);
    }

    /// Deterministic fuzzing: random bytes, random mutations of valid
    /// traffic; the decoder and the parsers must never panic.
    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds: [&[u8]; 5] = [b"$T05thread:p01.1;#00", b"$OK#9a", b"$0*}#00", b"+$W00#b7", b"$E14#aa"];
        for round in 0..20_000 {
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                (0..rnd() % 64).map(|_| rnd() as u8).collect()
            } else {
                seeds[(rnd() % 5) as usize].to_vec()
            };
            for _ in 0..rnd() % 4 {
                if !bytes.is_empty() {
                    let i = (rnd() as usize) % bytes.len();
                    bytes[i] = rnd() as u8;
                }
            }
            for e in decode_all(&bytes) {
                if let Event::Packet(p) = e {
                    let _ = parse_stop_reply(&p);
                    let _ = hex_decode(&p);
                    let _ = decode_body(&p);
                }
            }
            let _ = parse_stop_reply(&bytes);
            let _ = parse_hex_u64(&bytes);
        }
    }

    #[test]
    fn stop_replies() {
        assert_eq!(parse_stop_reply(b"S05").unwrap(), StopReply::Signal { signal: 5, info: vec![] });
        let t = parse_stop_reply(b"T0bthread:p01.4178;").unwrap();
        assert_eq!(t.field("thread"), Some("p01.4178"));
        assert!(matches!(t, StopReply::Signal { signal: 11, .. }));
        assert_eq!(parse_stop_reply(b"W00").unwrap(), StopReply::Exited { status: 0 });
        assert_eq!(parse_stop_reply(b"W01;process:12").unwrap(), StopReply::Exited { status: 1 });
        assert_eq!(parse_stop_reply(b"X09").unwrap(), StopReply::Terminated { signal: 9 });
        for bad in [&b""[..], b"T", b"T0", b"Tzz", b"S", b"W", b"Q05", b"OK"] {
            assert!(parse_stop_reply(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(hex_decode(b"00ff7A").unwrap(), vec![0, 255, 0x7a]);
        assert!(hex_decode(b"0").is_err());
        assert!(hex_decode(b"0g").is_err());
        assert_eq!(hex_encode(&[1, 0xab]), "01ab");
        assert_eq!(parse_hex_u64(b"1000"), Some(0x1000));
        assert_eq!(parse_hex_u64(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex_u64(b"10000000000000000"), None);
        assert_eq!(parse_hex_u64(b""), None);
    }

    #[test]
    fn handshake_reads_packet_size() {
        let mut c = client(b"+$PacketSize=1000;qXfer:auxv:read+;multiprocess+#00");
        // Fix the checksum of the scripted reply.
        let body = b"PacketSize=1000;qXfer:auxv:read+;multiprocess+";
        let mut input = b"+".to_vec();
        input.extend_from_slice(&frame(body));
        c.transport().input = input.into_iter().collect();
        let f = c.handshake().unwrap();
        assert_eq!(f.packet_size, 0x1000);
        assert!(f.supports("multiprocess"));
        assert!(!f.supports("vContSupported"));
        let out = String::from_utf8(c.transport().output.clone()).unwrap();
        assert!(out.starts_with("$qSupported"), "{out}");
        assert!(out.ends_with('+'), "reply must be acked: {out}");
    }

    #[test]
    fn retransmits_on_nack_then_gives_up() {
        let mut input = b"-+".to_vec();
        input.extend_from_slice(&frame(b"OK"));
        let mut c = client(&input);
        c.insert_breakpoint(0x1000, 4).unwrap();
        let out = c.transport().output.clone();
        let f = frame(b"Z0,1000,4");
        assert_eq!(&out[..f.len()], &f[..]);
        assert_eq!(&out[f.len()..2 * f.len()], &f[..], "retransmitted once");

        let mut c = client(b"-----");
        let err = c.request(b"g").unwrap_err();
        assert!(matches!(err, EngineError::Protocol { .. }), "{err:?}");
    }

    #[test]
    fn silence_is_a_timeout_naming_what_was_awaited() {
        let mut c = client(b"");
        match c.request(b"g").unwrap_err() {
            EngineError::Timeout { what, .. } => assert!(what.contains("ack of `g`"), "{what}"),
            e => panic!("{e:?}"),
        }
        let mut c = client(b"+");
        match c.request(b"g").unwrap_err() {
            EngineError::Timeout { what, .. } => assert!(what.contains("reply to `g`"), "{what}"),
            e => panic!("{e:?}"),
        }
        // Truncated reply: also a timeout, not a hang.
        let mut c = client(b"+$0102");
        assert!(matches!(c.read_registers().unwrap_err(), EngineError::Timeout { .. }));
        // wait_stop with no stop is Ok(None).
        let mut c = client(b"junk");
        assert_eq!(c.wait_stop(Duration::from_millis(10)).unwrap(), None);
    }

    #[test]
    fn bad_checksum_is_nacked_and_resent_reply_accepted() {
        let mut input = b"+$OK#00".to_vec();
        input.extend_from_slice(&frame(b"OK"));
        let mut c = client(&input);
        c.remove_breakpoint(0x20, 4).unwrap();
        let out = c.transport().output.clone();
        assert!(out.ends_with(b"-+"), "{:?}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn round_trips_are_counted_by_command() {
        // Each reply's `+` ack comes first, as from a real stub.
        let mut c = client(b"+$OK#9a+$E01#a6+$T05thread:01;#07");
        c.request(b"Z0,1000,4").unwrap();
        assert!(c.read_memory(0x1000, 4).is_err());
        c.resume_step().unwrap();
        assert!(matches!(c.wait_stop(Duration::from_millis(10)).unwrap(), Some(StopReply::Signal { signal: 5, .. })));
        let st = c.stats();
        assert_eq!((st.of(b'Z').0, st.of(b'm').0, st.of(b's').0, st.of(b'c').0), (1, 1, 1, 0));
        assert_eq!(st.round_trips(), 3);
        assert!(st.to_string().contains("`m` 1x"), "{st}");
    }

    #[test]
    fn memory_chunking_and_errors() {
        // PacketSize 0x80 => (128-64)/2 = 32 bytes per packet.
        let mut input = b"+".to_vec();
        input.extend_from_slice(&frame(b"PacketSize=80"));
        for _ in 0..3 {
            input.push(b'+');
            input.extend_from_slice(&frame(b"OK"));
        }
        input.push(b'+');
        input.extend_from_slice(&frame(b"E14"));
        let mut c = client(&input);
        c.handshake().unwrap();
        c.write_memory(0x100, &[0xaa; 70]).unwrap();
        let out = String::from_utf8(c.transport().output.clone()).unwrap();
        assert!(out.contains("$M100,20:"), "{out}");
        assert!(out.contains("$M120,20:"), "{out}");
        assert!(out.contains("$M140,6:"), "{out}");
        match c.read_memory(0x5000, 4).unwrap_err() {
            EngineError::Memory { op: "read", addr: 0x5000, .. } => {}
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn registers_roundtrip_and_rle_reply() {
        let mut input = b"+".to_vec();
        // 16 bytes of zero, run-length encoded: '0' + 31 more.
        input.extend_from_slice(b"$0*<#");
        input.extend_from_slice(hex_byte(checksum(b"0*<")).as_bytes());
        let mut c = client(&input);
        assert_eq!(c.read_registers().unwrap(), vec![0u8; 16]);
        // Garbage register reply is a protocol error.
        let mut input = b"+".to_vec();
        input.extend_from_slice(&frame(b"xyz"));
        let mut c = client(&input);
        assert!(matches!(c.read_registers().unwrap_err(), EngineError::Protocol { .. }));
    }

    #[test]
    fn wait_stop_skips_console_output() {
        let mut input = frame(b"O48656c6c6f");
        input.extend_from_slice(&frame(b"T05thread:p01.2;"));
        let mut c = client(&input);
        let s = c.wait_stop(Duration::from_millis(50)).unwrap().unwrap();
        assert!(matches!(s, StopReply::Signal { signal: 5, .. }));
    }

    #[test]
    fn closed_connection_is_protocol_error() {
        struct Eof;
        impl Read for Eof {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Ok(0)
            }
        }
        impl Write for Eof {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Transport for Eof {
            fn set_read_timeout(&mut self, _: Duration) -> io::Result<()> {
                Ok(())
            }
        }
        let mut c = GdbClient::new(Eof, "test", Duration::from_millis(50));
        match c.request(b"?").unwrap_err() {
            EngineError::Protocol { reason, .. } => assert!(reason.contains("closed"), "{reason}"),
            e => panic!("{e:?}"),
        }
    }
}
