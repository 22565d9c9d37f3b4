//! The kernel's printf, as `_printk`, `__warn_printk` and
//! `warn_slowpath_fmt` need it: the format string is read from guest
//! memory and its arguments from the caller's registers and stack.
//!
//! Conversions: `%d %i %u %x %X %o %c %s %p %%` with the flags `-+ #0`,
//! widths and precisions (`*` too) and the length modifiers `hh h l ll z t
//! j L q`, as lib/vsprintf.c takes them.  `%p` with extension letters
//! (`%pS`, `%px`, `%pK`, ...) consumes the letters as the kernel does
//! (every alphanumeric after the `p`); `%ps`/`%pS` print the symbol the
//! runtime finds for the address, the others the address in hex (the
//! kernel would hash plain `%p`; a test bed has no secrets to keep).

/// Where a format's arguments come from.
pub trait Args {
    /// The next integer argument of `bytes` bytes (4 or 8), zero-extended.
    fn next(&mut self, bytes: u32) -> u64;
    /// The NUL-terminated string at `addr`, if readable.
    fn string(&mut self, addr: u64) -> Option<String>;
    /// `symbol+0xoff/0xsize`-style name of a code address.
    fn symbol(&mut self, addr: u64) -> Option<String>;
}

/// A kernel log level prefix (`KERN_SOH` + level) split off a message.
pub fn split_level(msg: &str) -> (Option<char>, &str) {
    let mut level = None;
    let mut rest = msg;
    // Several prefixes may be stacked (KERN_CONT after a level, ...).
    while let Some(r) = rest.strip_prefix('\u{1}') {
        let mut chars = r.chars();
        match chars.next() {
            Some(c) => {
                if c.is_ascii_digit() || c == 'c' || c == 'd' {
                    level = Some(c);
                }
                rest = chars.as_str();
            }
            None => return (level, ""),
        }
    }
    (level, rest)
}

/// The name of a log level (`KERN_INFO` is level 6).
pub fn level_name(level: Option<char>) -> &'static str {
    match level {
        Some('0') => "emerg",
        Some('1') => "alert",
        Some('2') => "crit",
        Some('3') => "err",
        Some('4') => "warn",
        Some('5') => "notice",
        Some('6') => "info",
        Some('7') => "debug",
        Some('c') => "cont",
        _ => "default",
    }
}

#[derive(Default)]
struct Spec {
    left: bool,
    plus: bool,
    space: bool,
    alt: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

fn pad(s: String, spec: &Spec, numeric: bool) -> String {
    let w = spec.width.unwrap_or(0);
    let len = s.chars().count();
    if len >= w {
        return s;
    }
    let fill = w - len;
    if spec.left {
        return s + &" ".repeat(fill);
    }
    if spec.zero && numeric && spec.precision.is_none() {
        // Zeros go after a sign or 0x prefix.
        let split = if s.starts_with("0x") || s.starts_with("0X") {
            2
        } else if s.starts_with(['-', '+', ' ']) {
            1
        } else {
            0
        };
        return format!("{}{}{}", &s[..split], "0".repeat(fill), &s[split..]);
    }
    " ".repeat(fill) + &s
}

fn with_precision(digits: String, spec: &Spec) -> String {
    match spec.precision {
        Some(0) if digits == "0" => String::new(),
        Some(p) if digits.len() < p => "0".repeat(p - digits.len()) + &digits,
        _ => digits,
    }
}

/// Format `fmt` with arguments from `args`; `long_bytes` is `sizeof(long)`.
pub fn format(fmt: &str, args: &mut dyn Args, long_bytes: u32) -> String {
    let mut out = String::new();
    let b = fmt.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            let start = i;
            while i < b.len() && b[i] != b'%' {
                i += 1;
            }
            out.push_str(&fmt[start..i]);
            continue;
        }
        i += 1;
        if i >= b.len() {
            out.push('%');
            break;
        }
        let mut spec = Spec::default();
        while i < b.len() {
            match b[i] {
                b'-' => spec.left = true,
                b'+' => spec.plus = true,
                b' ' => spec.space = true,
                b'#' => spec.alt = true,
                b'0' => spec.zero = true,
                _ => break,
            }
            i += 1;
        }
        if i < b.len() && b[i] == b'*' {
            let w = args.next(4) as u32 as i32;
            if w < 0 {
                spec.left = true;
            }
            spec.width = Some(w.unsigned_abs() as usize);
            i += 1;
        } else {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i > s {
                spec.width = fmt[s..i].parse().ok();
            }
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            if i < b.len() && b[i] == b'*' {
                let p = args.next(4) as u32 as i32;
                spec.precision = Some(p.max(0) as usize);
                i += 1;
            } else {
                let s = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                spec.precision = Some(fmt[s..i].parse().unwrap_or(0));
            }
        }
        // Length modifier: how many bytes the argument has.
        let mut bytes = 4u32;
        let mut narrow = 0u32; // hh/h: the value is converted to char/short
        let mut longs = 0;
        while i < b.len() {
            match b[i] {
                b'h' => narrow = if narrow == 2 { 1 } else { 2 },
                b'l' => longs += 1,
                b'L' | b'q' | b'j' => longs = 2,
                b'z' | b'Z' | b't' => bytes = long_bytes,
                _ => break,
            }
            i += 1;
        }
        match longs {
            0 => {}
            1 => bytes = long_bytes,
            _ => bytes = 8,
        }
        if i >= b.len() {
            break;
        }
        let conv = b[i];
        i += 1;
        match conv {
            b'%' => out.push('%'),
            b'd' | b'i' | b'u' | b'x' | b'X' | b'o' => {
                let raw = args.next(bytes);
                let bits = if narrow != 0 { 8 * narrow } else { 8 * bytes };
                let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
                let v = raw & mask;
                let s = match conv {
                    b'd' | b'i' => {
                        let sv = if bits >= 64 { v as i64 } else { ((v << (64 - bits)) as i64) >> (64 - bits) };
                        let digits = with_precision(sv.unsigned_abs().to_string(), &spec);
                        let sign = if sv < 0 {
                            "-"
                        } else if spec.plus {
                            "+"
                        } else if spec.space {
                            " "
                        } else {
                            ""
                        };
                        format!("{sign}{digits}")
                    }
                    b'u' => with_precision(v.to_string(), &spec),
                    b'o' => {
                        let d = with_precision(format!("{v:o}"), &spec);
                        if spec.alt && !d.starts_with('0') {
                            format!("0{d}")
                        } else {
                            d
                        }
                    }
                    _ => {
                        let d = if conv == b'x' { format!("{v:x}") } else { format!("{v:X}") };
                        let d = with_precision(d, &spec);
                        if spec.alt && v != 0 {
                            format!("{}{d}", if conv == b'x' { "0x" } else { "0X" })
                        } else {
                            d
                        }
                    }
                };
                out.push_str(&pad(s, &spec, true));
            }
            b'c' => {
                let c = (args.next(4) & 0xff) as u8 as char;
                out.push_str(&pad(c.to_string(), &spec, false));
            }
            b's' => {
                let p = args.next(long_bytes);
                let mut s = if p == 0 {
                    "(null)".to_string()
                } else {
                    args.string(p).unwrap_or_else(|| "(efault)".to_string())
                };
                if let Some(prec) = spec.precision {
                    s = s.chars().take(prec).collect();
                }
                out.push_str(&pad(s, &spec, false));
            }
            b'p' => {
                let p = args.next(long_bytes);
                let start = i;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let ext = &fmt[start..i];
                let s = match ext.chars().next() {
                    Some('s' | 'S' | 'B') => args.symbol(p).unwrap_or_else(|| format!("{p:#x}")),
                    _ => format!("{:#0width$x}", p, width = 2 + 2 * long_bytes as usize),
                };
                out.push_str(&pad(s, &spec, false));
            }
            other => {
                // Unknown conversion: print it as vsprintf does (verbatim).
                out.push('%');
                out.push(other as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V(Vec<u64>, usize);
    impl Args for V {
        fn next(&mut self, _bytes: u32) -> u64 {
            let v = self.0.get(self.1).copied().unwrap_or(0);
            self.1 += 1;
            v
        }
        fn string(&mut self, addr: u64) -> Option<String> {
            (addr == 0x1000).then(|| "hello".to_string())
        }
        fn symbol(&mut self, addr: u64) -> Option<String> {
            (addr == 0x2000).then(|| "init_module+0x10/0x400".to_string())
        }
    }

    fn f(fmt: &str, args: &[u64]) -> String {
        format(fmt, &mut V(args.to_vec(), 0), 8)
    }

    #[test]
    fn percpu_test_check_messages_format_as_the_kernel_prints_them() {
        // lib/percpu_test.c's CHECK(): "pcp %ld (0x%lx) != expected %lld (0x%llx)"
        let m = f("pcp %ld (0x%lx) != expected %lld (0x%llx)", &[u64::MAX, u64::MAX, 0xffff_ffff, 0xffff_ffff]);
        assert_eq!(m, "pcp -1 (0xffffffffffffffff) != expected 4294967295 (0xffffffff)");
    }

    #[test]
    fn ints_are_truncated_to_their_width_and_signed_as_asked() {
        assert_eq!(f("%d %u %x", &[0xffff_ffff, 0xffff_ffff, 0x1_0000_0010]), "-1 4294967295 10");
        assert_eq!(f("%hhd %hu", &[0x1ff, 0x1_ffff]), "-1 65535");
        assert_eq!(format("%ld %lld", &mut V(vec![0xffff_ffff, u64::MAX], 0), 4), "-1 -1");
        assert_eq!(f("%zu %i", &[7, 5]), "7 5");
    }

    #[test]
    fn flags_widths_and_precisions() {
        assert_eq!(f("[%5d|%-5d|%05d|%+d|% d]", &[42, 42, 42, 42, 42]), "[   42|42   |00042|+42| 42]");
        assert_eq!(f("%#x %#o %08x %#010x", &[255, 8, 0xab, 0xab]), "0xff 010 000000ab 0x000000ab");
        assert_eq!(f("%.3d|%*d|%-*d|%.*s", &[5, 4, 7, (-3i64) as u64, 1, 2, 0x1000]), "005|   7|1  |he");
        assert_eq!(f("%c%c %% %s", &[b'o' as u64, b'k' as u64, 0]), "ok % (null)");
        assert_eq!(f("%s|%10s", &[0x1000, 0x1000]), "hello|     hello");
        assert_eq!(f("%s", &[0x3000]), "(efault)");
    }

    #[test]
    fn pointers_and_their_extensions() {
        assert_eq!(f("%px", &[0xdead]), "0x000000000000dead");
        assert_eq!(f("%pS done", &[0x2000]), "init_module+0x10/0x400 done");
        assert_eq!(f("%pK!", &[0x10]), "0x0000000000000010!");
    }

    #[test]
    fn log_levels_are_split_off() {
        assert_eq!(split_level("\u{1}6percpu test start\n"), (Some('6'), "percpu test start\n"));
        assert_eq!(split_level("plain"), (None, "plain"));
        assert_eq!(split_level("\u{1}4\u{1}cboth"), (Some('c'), "both"));
        assert_eq!(level_name(Some('6')), "info");
    }
}
