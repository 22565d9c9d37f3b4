//! A module's `__bug_table`: where its WARN and BUG trap instructions are,
//! with file, line and flags (lib/bug.c's `struct bug_entry`, laid out as
//! the tree's probe says: [`BugLayout`]).

use super::BugLayout;

/// One WARN or BUG site.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BugSite {
    /// The trap instruction.
    pub addr: u64,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub flags: u16,
}

impl BugSite {
    pub fn is_warning(&self, layout: &BugLayout) -> bool {
        self.flags & layout.flag_warning != 0
    }
    pub fn is_once(&self, layout: &BugLayout) -> bool {
        self.flags & layout.flag_once != 0
    }
    /// `file:line`, or what is known of it.
    pub fn location(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{f}:{l}"),
            (Some(f), None) => f.clone(),
            (None, Some(l)) => format!("line {l}"),
            (None, None) => "(no file:line: CONFIG_DEBUG_BUGVERBOSE is off)".into(),
        }
    }
}

/// Problems with a `__bug_table`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("__bug_table at {addr:#x}: {reason}")]
pub struct BugTableError {
    pub addr: u64,
    pub reason: String,
}

/// The entries of a relocated `__bug_table` loaded at `base`.
/// `read_str` reads a NUL-terminated string of the loaded image.
pub fn parse(
    base: u64,
    data: &[u8],
    layout: &BugLayout,
    little_endian: bool,
    ptr_bytes: u32,
    read_str: &dyn Fn(u64) -> Option<String>,
) -> Result<Vec<BugSite>, BugTableError> {
    let size = layout.size as usize;
    if size == 0 || data.len() % size != 0 {
        return Err(BugTableError {
            addr: base,
            reason: format!("{} bytes is not a whole number of {size}-byte entries", data.len()),
        });
    }
    let uint = |b: &[u8]| -> u64 {
        if little_endian {
            b.iter().rev().fold(0u64, |v, &x| v << 8 | x as u64)
        } else {
            b.iter().fold(0u64, |v, &x| v << 8 | x as u64)
        }
    };
    let field =
        |entry: &[u8], off: u64, len: usize| -> Option<u64> { entry.get(off as usize..off as usize + len).map(uint) };
    let pointer = |entry: &[u8], at: u64, off: u64| -> Option<u64> {
        if layout.relative {
            let disp = field(entry, off, 4)? as u32 as i32 as i64;
            Some(at.wrapping_add(off).wrapping_add(disp as u64))
        } else {
            field(entry, off, ptr_bytes as usize)
        }
    };
    let mut out = Vec::with_capacity(data.len() / size);
    for (i, entry) in data.chunks_exact(size).enumerate() {
        let at = base + (i * size) as u64;
        let bad = |what: &str| BugTableError { addr: at, reason: format!("entry {i}: {what} is outside the entry") };
        let addr = pointer(entry, at, layout.addr).ok_or_else(|| bad("the address"))?;
        let file = match layout.file {
            Some(off) => {
                let p = pointer(entry, at, off).ok_or_else(|| bad("the file"))?;
                read_str(p)
            }
            None => None,
        };
        let line = match layout.line {
            Some(off) => Some(field(entry, off, 2).ok_or_else(|| bad("the line"))? as u32),
            None => None,
        };
        let flags = field(entry, layout.flags, 2).ok_or_else(|| bad("the flags"))? as u16;
        out.push(BugSite { addr, file, line, flags });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: BugLayout = BugLayout {
        size: 12,
        relative: true,
        addr: 0,
        file: Some(4),
        line: Some(8),
        flags: 10,
        flag_warning: 1,
        flag_once: 2,
        flag_done: 4,
    };

    #[test]
    fn relative_entries_point_from_their_own_fields() {
        // Entry at 0x1000: trap at 0x900 (disp -0x700), file at 0x2004 (disp +0x1000 from 0x1004).
        let mut e = Vec::new();
        e.extend((-0x700i32).to_le_bytes());
        e.extend(0x1000i32.to_le_bytes());
        e.extend(37u16.to_le_bytes());
        e.extend(0x0901u16.to_le_bytes());
        let read = |p: u64| (p == 0x2004).then(|| "lib/percpu_test.c".to_string());
        let sites = parse(0x1000, &e, &LAYOUT, true, 8, &read).unwrap();
        assert_eq!(sites.len(), 1);
        let s = &sites[0];
        assert_eq!(s.addr, 0x900);
        assert_eq!(s.location(), "lib/percpu_test.c:37");
        assert!(s.is_warning(&LAYOUT) && !s.is_once(&LAYOUT));
    }

    #[test]
    fn big_endian_absolute_entries_and_bad_sizes() {
        let layout = BugLayout { size: 8, relative: false, addr: 0, file: None, line: None, flags: 6, ..LAYOUT };
        let e = [0x00, 0x00, 0x12, 0x34, 0, 0, 0x00, 0x01];
        let s = parse(0, &e, &layout, false, 4, &|_| None).unwrap();
        assert_eq!((s[0].addr, s[0].flags, s[0].line), (0x1234, 1, None));
        assert!(s[0].location().contains("DEBUG_BUGVERBOSE"));
        assert!(parse(0, &e[..7], &layout, false, 4, &|_| None).is_err());
    }
}
