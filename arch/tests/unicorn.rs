//! The Unicorn engine on its five arches, with tiny hand-assembled functions.
//!
//! Machine code was produced with the cross binutils
//! (`<triple>-as` + `objdump -d`); each byte string carries its assembly.

use std::time::Instant;

use percpu_arch::engine::unicorn::{UnicornConfig, UnicornEngine, DEFAULT_TRAMPOLINE_32, DEFAULT_TRAMPOLINE_64};
use percpu_arch::engine::{Access, Cpu, Engine, EngineError, MemAccess, Outcome, Perms, Reg};

const CODE: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STACK: u64 = 0x30000;
const STACK_TOP: u64 = 0x40000;
/// Never mapped.
const HOLE: u64 = 0x5000_0000;
const BUDGET: u64 = 10_000;

const ARCHES: [Cpu; 5] = [Cpu::X86_64, Cpu::Arm64, Cpu::Sparc32, Cpu::S390x, Cpu::Riscv64];

/// One arch's test functions: code bytes and entry offsets.
struct Prog {
    code: Vec<u8>,
    /// `percpu(arg)`: load from the percpu base / thread pointer (+ arg).
    percpu: u64,
    /// `for (;;);`
    spin: u64,
    /// `store(addr, value)`: `*addr = value`.
    store: u64,
    /// An illegal instruction.
    ill: u64,
}

fn words_be(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

fn words_le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn prog(cpu: Cpu) -> Prog {
    match cpu {
        Cpu::X86_64 => Prog {
            #[rustfmt::skip]
            code: vec![
                // percpu: 0x00
                0x65, 0x48, 0x8b, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00, // mov %gs:0x10, %rax
                0x48, 0x01, 0xf8,                                     // add %rdi, %rax
                0xc3,                                                 // ret
                // spin: 0x0d
                0xeb, 0xfe,                                           // jmp .
                // store: 0x0f
                0x48, 0x89, 0x37,                                     // mov %rsi, (%rdi)
                0xc3,                                                 // ret
                // ill: 0x13
                0x0f, 0x0b,                                           // ud2
            ],
            percpu: 0x00,
            spin: 0x0d,
            store: 0x0f,
            ill: 0x13,
        },
        Cpu::Arm64 => Prog {
            code: words_le(&[
                // percpu: 0x00
                0xd538d081, // mrs x1, tpidr_el1
                0xf8606820, // ldr x0, [x1, x0]
                0xd65f03c0, // ret
                // spin: 0x0c
                0x14000000, // b .
                // store: 0x10
                0xf9000001, // str x1, [x0]
                0xd65f03c0, // ret
                // el2: 0x18
                0xd53cd040, // mrs x0, tpidr_el2
                0xd65f03c0, // ret
                // current_el: 0x20
                0xd5384240, // mrs x0, CurrentEL
                0xd65f03c0, // ret
                // ill: 0x28
                0x00000000, // udf #0
            ]),
            percpu: 0x00,
            spin: 0x0c,
            store: 0x10,
            ill: 0x28,
        },
        Cpu::Sparc32 => Prog {
            code: words_be(&[
                // percpu: 0x00
                0xd201a010, // ld [%g6 + 16], %o1
                0x81c3e008, // retl
                0x90024008, //  add %o1, %o0, %o0
                // spin: 0x0c
                0x10800000, // ba .
                0x01000000, //  nop
                // store: 0x14
                0xd2220000, // st %o1, [%o0]
                0x81c3e008, // retl
                0x01000000, //  nop
                // f1: 0x20  f1(x) = f2(x + 1)
                0x9de3bfa0, // save %sp, -96, %sp
                0x40000004, // call f2
                0x90062001, //  add %i0, 1, %o0
                0x81c7e008, // ret
                0x91ea2000, //  restore %o0, 0, %o0
                // f2: 0x34  f2(x) = f3(x + 10)
                0x9de3bfa0, // save %sp, -96, %sp
                0x40000004, // call f3
                0x9006200a, //  add %i0, 10, %o0
                0x81c7e008, // ret
                0x91ea2000, //  restore %o0, 0, %o0
                // f3: 0x48  f3(x) = f4(x + 100)
                0x9de3bfa0, // save %sp, -96, %sp
                0x40000004, // call f4
                0x90062064, //  add %i0, 100, %o0
                0x81c7e008, // ret
                0x91ea2000, //  restore %o0, 0, %o0
                // f4: 0x5c  f4(x) = f5(x + 1000)
                0x9de3bfa0, // save %sp, -96, %sp
                0x40000004, // call f5
                0x900623e8, //  add %i0, 1000, %o0
                0x81c7e008, // ret
                0x91ea2000, //  restore %o0, 0, %o0
                // f5: 0x70  leaf: f5(x) = x + 2000
                0x81c3e008, // retl
                0x900227d0, //  add %o0, 2000, %o0
                // ill: 0x78
                0x00000000, // unimp 0
                // rec: 0x7c  rec(n) = n == 0 ? 0 : rec(n - 1) + 1, one save per level
                0x9de3bfa0, // save %sp, -96, %sp
                0x80a62000, // cmp %i0, 0
                0x02800006, // be 1f
                0x01000000, //  nop
                0x7ffffffc, // call rec
                0x90262001, //  sub %i0, 1, %o0
                0x81c7e008, // ret
                0x91ea2001, //  restore %o0, 1, %o0
                0x81c7e008, // 1: ret
                0x91e82000, //  restore %g0, 0, %o0
            ]),
            percpu: 0x00,
            spin: 0x0c,
            store: 0x14,
            ill: 0x78,
        },
        Cpu::S390x => Prog {
            #[rustfmt::skip]
            code: vec![
                // percpu: 0x00
                0xe3, 0x10, 0x03, 0xb8, 0x00, 0x04, // lg %r1, 0x3b8(%r0)   (lowcore percpu offset)
                0xe3, 0x22, 0x10, 0x00, 0x00, 0x04, // lg %r2, 0(%r2,%r1)
                0x07, 0xfe,                         // br %r14
                // spin: 0x0e
                0xa7, 0xf4, 0x00, 0x00,             // j .
                // store: 0x12
                0xe3, 0x30, 0x20, 0x00, 0x00, 0x24, // stg %r3, 0(%r2)
                0x07, 0xfe,                         // br %r14
                // ill: 0x1a
                0x00, 0x00,                         // .short 0 (operation exception)
            ],
            percpu: 0x00,
            spin: 0x0e,
            store: 0x12,
            ill: 0x1a,
        },
        Cpu::Riscv64 => Prog {
            #[rustfmt::skip]
            code: vec![
                // percpu: 0x00
                0x83, 0x35, 0x02, 0x01, // ld a1, 16(tp)
                0x2e, 0x95,             // add a0, a0, a1   (c.add)
                0x82, 0x80,             // ret              (c.jr ra)
                // spin: 0x08
                0x01, 0xa0,             // j .              (c.j)
                // store: 0x0a
                0x0c, 0xe1,             // sd a1, 0(a0)     (c.sd)
                0x82, 0x80,             // ret
                // ill: 0x0e
                0x00, 0x00, 0x00, 0x00, // .word 0
            ],
            percpu: 0x00,
            spin: 0x08,
            store: 0x0a,
            ill: 0x0e,
        },
        Cpu::Alpha => unreachable!(),
    }
}

fn big_endian(cpu: Cpu) -> bool {
    matches!(cpu, Cpu::Sparc32 | Cpu::S390x)
}

/// A word of the arch's natural width in its byte order.
fn word(cpu: Cpu, v: u64) -> Vec<u8> {
    match (cpu, big_endian(cpu)) {
        (Cpu::Sparc32, _) => (v as u32).to_be_bytes().to_vec(),
        (_, true) => v.to_be_bytes().to_vec(),
        (_, false) => v.to_le_bytes().to_vec(),
    }
}

/// An engine with CODE (RX), DATA, STACK (RW) mapped and the arch's test
/// program loaded; s390x also gets its lowcore page at 0.
fn setup(cpu: Cpu) -> (UnicornEngine, Prog) {
    let mut e = UnicornEngine::new(cpu).unwrap();
    let p = prog(cpu);
    e.map(CODE, 0x1000, Perms::RX).unwrap();
    e.write(CODE, &p.code).unwrap();
    e.map(DATA, 0x1000, Perms::RW).unwrap();
    e.map(STACK, STACK_TOP - STACK, Perms::RW).unwrap();
    if cpu == Cpu::S390x {
        e.map(0, 0x1000, Perms::RW).unwrap();
    }
    (e, p)
}

/// Point the arch's percpu base at `base`, run `percpu(arg)`.
fn run_percpu(e: &mut UnicornEngine, p: &Prog, base: u64, arg: u64) -> Outcome {
    let cpu = e.cpu();
    match cpu {
        Cpu::X86_64 => e.set_reg(Reg::GsBase, base).unwrap(),
        Cpu::Arm64 => e.set_reg(Reg::TpidrEl1, base).unwrap(),
        Cpu::Sparc32 => e.set_reg(Reg::G6, base).unwrap(),
        Cpu::S390x => e.write(0x3b8, &base.to_be_bytes()).unwrap(),
        Cpu::Riscv64 => e.set_reg(Reg::Tp, base).unwrap(),
        Cpu::Alpha => unreachable!(),
    }
    e.call(CODE + p.percpu, &[arg], STACK_TOP, BUDGET).unwrap()
}

/// Per arch: (value location relative to the base, argument, expected
/// result, instructions) for `percpu(arg)` with the value 0x1234_5000 placed.
fn percpu_case(cpu: Cpu) -> (u64, u64, u64, u64) {
    match cpu {
        // gs:[0x10] + arg
        Cpu::X86_64 => (0x10, 0x2a, 0x1234_502a, 3),
        // [tpidr_el1 + arg]
        Cpu::Arm64 => (0x18, 0x18, 0x1234_5000, 3),
        // [g6 + 16] + arg
        Cpu::Sparc32 => (0x10, 0x2a, 0x1234_502a, 3),
        // [lowcore.percpu_offset + arg]
        Cpu::S390x => (0x20, 0x20, 0x1234_5000, 3),
        // [tp + 16] + arg
        Cpu::Riscv64 => (0x10, 0x2a, 0x1234_502a, 3),
        Cpu::Alpha => unreachable!(),
    }
}

#[test]
fn percpu_base_read_on_every_arch() {
    for cpu in ARCHES {
        let (mut e, p) = setup(cpu);
        let (at, arg, expect, insns) = percpu_case(cpu);
        e.write(DATA + at, &word(cpu, 0x1234_5000)).unwrap();
        let out = run_percpu(&mut e, &p, DATA, arg);
        assert_eq!(out, Outcome::Returned { value: expect, instructions: Some(insns) }, "{cpu}");
        // Calls are repeatable and the engine keeps its state.
        let out = run_percpu(&mut e, &p, DATA, arg);
        assert_eq!(out, Outcome::Returned { value: expect, instructions: Some(insns) }, "{cpu} again");
    }
}

#[test]
fn percpu_registers_read_back() {
    let mut e = UnicornEngine::new(Cpu::X86_64).unwrap();
    e.set_reg(Reg::GsBase, 0xffff_8880_1234_0000).unwrap();
    assert_eq!(e.reg(Reg::GsBase).unwrap(), 0xffff_8880_1234_0000);

    let mut e = UnicornEngine::new(Cpu::Arm64).unwrap();
    e.set_reg(Reg::TpidrEl1, 0x1111_2222_3333_4444).unwrap();
    e.set_reg(Reg::TpidrEl2, 0x5555_6666_7777_8888).unwrap();
    assert_eq!(e.reg(Reg::TpidrEl1).unwrap(), 0x1111_2222_3333_4444);
    assert_eq!(e.reg(Reg::TpidrEl2).unwrap(), 0x5555_6666_7777_8888);

    let mut e = UnicornEngine::new(Cpu::Sparc32).unwrap();
    e.set_reg(Reg::G6, 0xf000_1234).unwrap();
    assert_eq!(e.reg(Reg::G6).unwrap(), 0xf000_1234);
    // Sign-extended 32-bit values are accepted, wider ones refused.
    e.set_reg(Reg::G6, (-8i64) as u64).unwrap();
    assert_eq!(e.reg(Reg::G6).unwrap(), 0xffff_fff8);
    assert!(e.set_reg(Reg::G6, 0x1_0000_0000).is_err());

    let mut e = UnicornEngine::new(Cpu::S390x).unwrap();
    assert_eq!(e.reg(Reg::PswMask).unwrap(), 0x0000_0001_8000_0000);

    let mut e = UnicornEngine::new(Cpu::Riscv64).unwrap();
    e.set_reg(Reg::Tp, 0x8000_1000).unwrap();
    e.set_reg(Reg::Gp, 0x8000_2000).unwrap();
    assert_eq!(e.reg(Reg::Tp).unwrap(), 0x8000_1000);
    assert_eq!(e.reg(Reg::Gp).unwrap(), 0x8000_2000);
}

#[test]
fn roles_missing_on_an_arch_are_no_register() {
    let cases = [
        (Cpu::X86_64, Reg::TpidrEl1),
        (Cpu::X86_64, Reg::ReturnAddress),
        (Cpu::X86_64, Reg::Arg(6)),
        (Cpu::Arm64, Reg::GsBase),
        (Cpu::Arm64, Reg::Arg(8)),
        (Cpu::Sparc32, Reg::Tp),
        (Cpu::S390x, Reg::G6),
        (Cpu::S390x, Reg::Arg(5)),
        (Cpu::Riscv64, Reg::PswMask),
        (Cpu::Riscv64, Reg::ThreadPointer),
    ];
    for (cpu, reg) in cases {
        let mut e = UnicornEngine::new(cpu).unwrap();
        assert!(matches!(e.reg(reg), Err(EngineError::NoRegister { reg: r, .. }) if r == reg), "{cpu} {reg:?}");
        assert!(matches!(e.set_reg(reg, 1), Err(EngineError::NoRegister { .. })), "{cpu} {reg:?}");
    }
}

#[test]
fn alpha_is_not_served() {
    let err = UnicornEngine::new(Cpu::Alpha).err().expect("alpha must be refused");
    let msg = err.to_string();
    assert!(msg.contains("no Alpha") && msg.contains("qemu-alpha"), "{msg}");
}

#[test]
fn infinite_loop_exhausts_the_budget_on_every_arch() {
    for cpu in ARCHES {
        let (mut e, p) = setup(cpu);
        let out = e.call(CODE + p.spin, &[], STACK_TOP, 5000).unwrap();
        assert_eq!(out, Outcome::BudgetExhausted { pc: CODE + p.spin, budget: 5000 }, "{cpu}");
    }
}

#[test]
fn unmapped_store_faults_with_the_address_on_every_arch() {
    for cpu in ARCHES {
        let (mut e, p) = setup(cpu);
        let out = e.call(CODE + p.store, &[HOLE + 0x18, 7], STACK_TOP, BUDGET).unwrap();
        assert_eq!(
            out,
            Outcome::Fault { pc: CODE + p.store, addr: HOLE + 0x18, access: Access::Write, unmapped: true },
            "{cpu}"
        );
    }
}

#[test]
fn unmapped_read_faults_on_every_arch() {
    for cpu in ARCHES {
        let (mut e, p) = setup(cpu);
        let (at, arg, _, _) = percpu_case(cpu);
        let out = run_percpu(&mut e, &p, HOLE, arg);
        // x86_64 and s390x do not fault on the base itself (a register, the
        // lowcore) but on the percpu slot; every arch faults at base + at.
        let pc = match cpu {
            // s390x: the second instruction, the first reads the lowcore.
            Cpu::S390x => CODE + 6,
            // arm64: ldr after mrs
            Cpu::Arm64 => CODE + 4,
            _ => CODE + p.percpu,
        };
        assert_eq!(out, Outcome::Fault { pc, addr: HOLE + at, access: Access::Read, unmapped: true }, "{cpu}");
    }
}

#[test]
fn unmapped_fetch_faults_on_every_arch() {
    for cpu in ARCHES {
        let (mut e, _) = setup(cpu);
        let out = e.call(HOLE, &[], STACK_TOP, BUDGET).unwrap();
        assert_eq!(out, Outcome::Fault { pc: HOLE, addr: HOLE, access: Access::Fetch, unmapped: true }, "{cpu}");
    }
}

#[test]
fn store_to_read_only_memory_is_a_protection_fault() {
    for cpu in ARCHES {
        let (mut e, p) = setup(cpu);
        let out = e.call(CODE + p.store, &[CODE + 0x800, 7], STACK_TOP, BUDGET).unwrap();
        assert_eq!(
            out,
            Outcome::Fault { pc: CODE + p.store, addr: CODE + 0x800, access: Access::Write, unmapped: false },
            "{cpu}"
        );
    }
}

#[test]
fn illegal_instruction_traps_on_every_arch() {
    for cpu in ARCHES {
        let (mut e, p) = setup(cpu);
        let out = e.call(CODE + p.ill, &[], STACK_TOP, BUDGET).unwrap();
        match out {
            Outcome::Trap { pc, ref reason } => {
                assert_eq!(pc, CODE + p.ill, "{cpu}: {reason}");
            }
            other => panic!("{cpu}: expected a trap, got {other:?}"),
        }
        // The engine is still usable after a trap.
        let (at, arg, expect, insns) = percpu_case(cpu);
        e.write(DATA + at, &word(cpu, 0x1234_5000)).unwrap();
        assert_eq!(
            run_percpu(&mut e, &p, DATA, arg),
            Outcome::Returned { value: expect, instructions: Some(insns) },
            "{cpu}"
        );
    }
}

#[test]
fn unmapping_makes_memory_fault_again() {
    for cpu in ARCHES {
        let (mut e, p) = setup(cpu);
        let page = 0x6000_0000;
        e.map(page, 0x2000, Perms::RW).unwrap();
        assert!(matches!(
            e.call(CODE + p.store, &[page + 0x1008, 9], STACK_TOP, BUDGET).unwrap(),
            Outcome::Returned { .. }
        ));
        let mut buf = vec![0u8; word(cpu, 9).len()];
        e.read(page + 0x1008, &mut buf).unwrap();
        assert_eq!(buf, word(cpu, 9), "{cpu}");
        e.unmap(page + 0x1000, 0x1000).unwrap();
        let out = e.call(CODE + p.store, &[page + 0x1008, 9], STACK_TOP, BUDGET).unwrap();
        assert_eq!(
            out,
            Outcome::Fault { pc: CODE + p.store, addr: page + 0x1008, access: Access::Write, unmapped: true },
            "{cpu}"
        );
        // Mapped again, the page is fresh: zeroed, and stores work.
        e.map(page + 0x1000, 0x1000, Perms::RW).unwrap();
        let mut buf = vec![0xffu8; 16];
        e.read(page + 0x1000, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "{cpu}: {buf:?}");
        assert!(matches!(
            e.call(CODE + p.store, &[page + 0x1008, 9], STACK_TOP, BUDGET).unwrap(),
            Outcome::Returned { .. }
        ));
        // Host access to unmapped memory is an error, not a fault.
        assert!(matches!(e.read(HOLE, &mut buf), Err(EngineError::Memory { .. })));
        assert!(matches!(e.write(page + 0x1ffc, &[0; 8]), Err(EngineError::Memory { .. })));
    }
}

#[test]
fn map_checks_granule_and_trampoline() {
    let mut e = UnicornEngine::new(Cpu::X86_64).unwrap();
    assert_eq!(e.map_granule(), 4096);
    assert!(e.map(0x1800, 0x1000, Perms::RW).is_err());
    assert!(e.map(0x1000, 0x800, Perms::RW).is_err());
    assert!(e.map(DEFAULT_TRAMPOLINE_64 - 0x1000, 0x2000, Perms::RW).is_err());
    e.map(0x1000, 0x1000, Perms::RW).unwrap();
    assert!(e.map(0x1000, 0x1000, Perms::RW).is_err(), "double map");
    // 64 KiB pages are 16 granules.
    e.map(0x10_0000, 0x1_0000, Perms::RW).unwrap();
    e.unmap(0x10_4000, 0x1000).unwrap();

    let e = UnicornEngine::new(Cpu::Sparc32).unwrap();
    assert_eq!(e.trampoline(), DEFAULT_TRAMPOLINE_32);
}

#[test]
fn trampoline_address_is_configurable() {
    for cpu in ARCHES {
        let cfg = UnicornConfig { trampoline: Some(0x00f0_0000) };
        let mut e = UnicornEngine::with_config(cpu, cfg).unwrap();
        assert_eq!(e.trampoline(), 0x00f0_0000);
        let p = prog(cpu);
        e.map(CODE, 0x1000, Perms::RX).unwrap();
        e.write(CODE, &p.code).unwrap();
        e.map(STACK, STACK_TOP - STACK, Perms::RW).unwrap();
        e.map(DATA, 0x1000, Perms::RW).unwrap();
        let out = e.call(CODE + p.store, &[DATA, 5], STACK_TOP, BUDGET).unwrap();
        assert!(matches!(out, Outcome::Returned { .. }), "{cpu}: {out:?}");
    }
    assert!(UnicornEngine::with_config(Cpu::Arm64, UnicornConfig { trampoline: Some(0x1234) }).is_err());
}

#[test]
fn sparc_nested_save_restore_returns_through_the_trampoline() {
    let (mut e, _) = setup(Cpu::Sparc32);
    // f1 -> f2 -> f3 -> f4 (four saves) -> f5 (leaf)
    let out = e.call(CODE + 0x20, &[5], STACK_TOP, BUDGET).unwrap();
    assert_eq!(out, Outcome::Returned { value: 5 + 3111, instructions: Some(4 * 5 + 2) }, "{out:?}");
    // Again: the window state is reset per call.
    let out = e.call(CODE + 0x20, &[6], STACK_TOP, BUDGET).unwrap();
    assert!(matches!(out, Outcome::Returned { value: 3117, .. }), "{out:?}");
}

#[test]
fn sparc_window_depth() {
    let (mut e, _) = setup(Cpu::Sparc32);
    let rec = CODE + 0x7c;
    // rec(n) does n + 1 nested saves; six fit (CWP 7 down to 1, WIM = 1).
    // Without the engine's WIM setup, eight would "fit" and the ninth would
    // silently corrupt the caller's window.
    for n in 0..=5u64 {
        let out = e.call(rec, &[n], STACK_TOP, BUDGET).unwrap();
        assert!(matches!(out, Outcome::Returned { value, .. } if value == n), "rec({n}): {out:?}");
    }
    // The seventh save hits the invalid window: overflow trap (traps are
    // off, so there is no handler to spill windows).
    let out = e.call(rec, &[6], STACK_TOP, BUDGET).unwrap();
    match out {
        Outcome::Trap { pc, reason } => {
            assert_eq!(pc, rec, "{reason}");
            assert!(reason.contains("window overflow"), "{reason}");
        }
        other => panic!("expected a window overflow trap, got {other:?}"),
    }
}

#[test]
fn arm64_runs_at_el1_and_tpidr_el2_is_undefined_there() {
    let (mut e, _) = setup(Cpu::Arm64);
    // mrs x0, CurrentEL: EL in bits [3:2]
    let out = e.call(CODE + 0x20, &[], STACK_TOP, BUDGET).unwrap();
    assert_eq!(out, Outcome::Returned { value: 1 << 2, instructions: Some(2) });
    e.set_reg(Reg::TpidrEl2, 0xabcd).unwrap();
    let out = e.call(CODE + 0x18, &[], STACK_TOP, BUDGET).unwrap();
    match out {
        Outcome::Trap { pc, reason } => {
            assert_eq!(pc, CODE + 0x18);
            assert!(reason.contains("undefined"), "{reason}");
        }
        other => panic!("mrs tpidr_el2 at EL1: expected UNDEF, got {other:?}"),
    }
}

#[test]
fn trace_records_data_accesses() {
    for cpu in ARCHES {
        let (mut e, p) = setup(cpu);
        // A call before tracing is switched on (its blocks are translated
        // and cached) must not hide later accesses.
        e.call(CODE + p.store, &[DATA + 0x40, 0x77], STACK_TOP, BUDGET).unwrap();
        assert!(e.take_trace().is_empty(), "{cpu}: trace off records nothing");

        e.set_trace(true);
        let out = e.call(CODE + p.store, &[DATA + 0x40, 0x1234_5678], STACK_TOP, BUDGET).unwrap();
        assert!(matches!(out, Outcome::Returned { .. }), "{cpu}: {out:?}");
        let trace = e.take_trace();
        let size = if cpu == Cpu::Sparc32 { 4 } else { 8 };
        // The untraced call before stored 0x77 there: that is what it overwrote.
        let store = MemAccess {
            pc: CODE + p.store,
            addr: DATA + 0x40,
            size,
            access: Access::Write,
            value: Some(0x1234_5678),
            old: Some(0x77),
        };
        assert!(trace.contains(&store), "{cpu}: {trace:?}");
        if cpu == Cpu::X86_64 {
            // ret pops the return address off the stack.
            let pop = MemAccess {
                pc: CODE + p.store + 3,
                addr: STACK_TOP - 8,
                size: 8,
                access: Access::Read,
                value: None,
                old: None,
            };
            assert_eq!(trace, vec![store, pop]);
        } else {
            assert_eq!(trace, vec![store], "{cpu}");
        }

        // Reads are recorded with their pc.
        let (at, arg, _, _) = percpu_case(cpu);
        e.write(DATA + at, &word(cpu, 1)).unwrap();
        run_percpu(&mut e, &p, DATA, arg);
        let trace = e.take_trace();
        assert!(
            trace.iter().any(|a| a.access == Access::Read && a.addr == DATA + at && a.size == size),
            "{cpu}: {trace:?}"
        );

        e.set_trace(false);
        e.call(CODE + p.store, &[DATA + 0x40, 1], STACK_TOP, BUDGET).unwrap();
        assert!(e.take_trace().is_empty(), "{cpu}: trace switched off");
    }
}

#[test]
fn engines_run_on_many_threads() {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for round in 0..3u64 {
                    for cpu in ARCHES {
                        let (mut e, p) = setup(cpu);
                        let (at, _, _, _) = percpu_case(cpu);
                        let v = 0x1000 * (t + 1) + round;
                        e.write(DATA + at, &word(cpu, v)).unwrap();
                        let arg = if matches!(cpu, Cpu::Arm64 | Cpu::S390x) { at } else { 0 };
                        for _ in 0..20 {
                            let out = run_percpu(&mut e, &p, DATA, arg);
                            assert!(matches!(out, Outcome::Returned { value, .. } if value == v), "{cpu}: {out:?}");
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn an_engine_moves_to_another_thread() {
    let (mut e, p) = setup(Cpu::Riscv64);
    e.write(DATA + 0x10, &40u64.to_le_bytes()).unwrap();
    assert!(matches!(run_percpu(&mut e, &p, DATA, 2), Outcome::Returned { value: 42, .. }));
    let out = std::thread::spawn(move || run_percpu(&mut e, &p, DATA, 3)).join().unwrap();
    assert!(matches!(out, Outcome::Returned { value: 43, .. }), "{out:?}");
}

/// Map `n` regions of 32 KiB with a 32 KiB hole after each, return seconds.
fn map_regions(cpu: Cpu, n: u64) -> f64 {
    let mut e = UnicornEngine::new(cpu).unwrap();
    let base = 0x1_0000_0000u64.min(if cpu == Cpu::Sparc32 { 0x1000_0000 } else { u64::MAX });
    let t = Instant::now();
    for i in 0..n {
        e.map(base + i * 0x10000, 0x8000, Perms::RW).unwrap();
    }
    t.elapsed().as_secs_f64()
}

#[test]
fn mapping_4096_units_is_cheap() {
    // 4096 CPUs' 32 KiB units, separate regions (the worst case: adjacent
    // units could be one mapping).
    let t1024 = map_regions(Cpu::X86_64, 1024);
    let t4096 = map_regions(Cpu::X86_64, 4096);
    eprintln!("unicorn: mapping 1024 x 32 KiB: {:.1} ms, 4096 x 32 KiB: {:.1} ms", t1024 * 1e3, t4096 * 1e3);
    assert!(t4096 < 5.0, "mapping 4096 units took {t4096:.2} s");
}

#[test]
fn kernel_like_high_addresses_work_on_64_bit_arches() {
    // Code, data and stack in the high half (MMU off, translated by the
    // engine's page table): what adapters of x86_64/arm64/riscv64 kernels see.
    let cases = [
        (Cpu::X86_64, 0xffff_ffff_8100_0000u64, 0xffff_8880_0000_0000u64),
        (Cpu::Arm64, 0xffff_8000_0800_0000, 0xffff_0000_1000_0000),
        (Cpu::S390x, 0x0000_0400_0000_0000, 0x0000_0380_0000_0000),
        (Cpu::Riscv64, 0xffff_ffff_8000_0000, 0xffff_ffd8_0000_0000),
    ];
    for (cpu, code, data) in cases {
        let mut e = UnicornEngine::new(cpu).unwrap();
        let p = prog(cpu);
        e.map(code, 0x1000, Perms::RX).unwrap();
        e.write(code, &p.code).unwrap();
        e.map(data, 0x1_0000, Perms::RW).unwrap();
        let stack_top = data + 0x1_0000;
        if cpu == Cpu::S390x {
            e.map(0, 0x1000, Perms::RW).unwrap();
        }
        let out = e.call(code + p.store, &[data + 0x100, 0x55], stack_top, BUDGET).unwrap();
        assert!(matches!(out, Outcome::Returned { .. }), "{cpu}: {out:?}");
        let mut buf = vec![0u8; 8];
        e.read(data + 0x100, &mut buf).unwrap();
        assert_eq!(buf, word(cpu, 0x55), "{cpu}");
        let out = e.call(code + p.store, &[data - 0x1000, 0x55], stack_top, BUDGET).unwrap();
        assert_eq!(
            out,
            Outcome::Fault { pc: code + p.store, addr: data - 0x1000, access: Access::Write, unmapped: true },
            "{cpu}"
        );
    }
}

/// x86_64: `call slot; ud2; mov $42,%eax; ret` with a host-call slot and a
/// breakpoint on the `ud2` (a WARN site).  The host call stops first; the
/// host's return lands on the breakpoint, which is reported; resuming from
/// the breakpoint it stopped at runs the `ud2` itself.
#[test]
fn host_call_then_breakpoint_then_resume() {
    let (mut e, _) = setup(Cpu::X86_64);
    let (entry, slot) = (CODE + 0x100, CODE + 0x800);
    #[rustfmt::skip]
    let code = [
        0xe8, 0xfb, 0x06, 0x00, 0x00, // call CODE+0x800
        0x0f, 0x0b,                   // ud2
        0xb8, 0x2a, 0x00, 0x00, 0x00, // mov $42, %eax
        0xc3,                         // ret
    ];
    e.write(entry, &code).unwrap();
    e.write(slot, &[0xcc]).unwrap(); // int3: never reached
    e.set_host_calls(&[slot]).unwrap();
    e.set_breakpoints(&[entry + 5]).unwrap();
    match e.call(entry, &[], STACK_TOP, BUDGET).unwrap() {
        Outcome::HostCall { pc, instructions } => assert_eq!((pc, instructions), (slot, Some(1))),
        o => panic!("{o:?}"),
    }
    // The host returns: pop the return address.
    let sp = e.reg(Reg::Sp).unwrap();
    let mut ra = [0u8; 8];
    e.read(sp, &mut ra).unwrap();
    e.set_reg(Reg::Sp, sp + 8).unwrap();
    e.set_reg(Reg::Pc, u64::from_le_bytes(ra)).unwrap();
    match e.resume(BUDGET).unwrap() {
        Outcome::Breakpoint { pc, instructions } => assert_eq!((pc, instructions), (entry + 5, Some(0))),
        o => panic!("{o:?}"),
    }
    // Not moved past: the ud2 runs (the runtime moves past it instead).
    assert!(matches!(e.resume(BUDGET).unwrap(), Outcome::Trap { pc, .. } if pc == entry + 5));
    e.set_reg(Reg::Pc, entry + 7).unwrap();
    assert!(matches!(e.resume(BUDGET).unwrap(), Outcome::Returned { value: 42, .. }));
}

/// A run's CPU state does not leak into the next: `reset_cpu` returns every
/// register to the snapshot (here r15, which no adapter sets, clobbered by
/// `mov %rdi, %r15; ret`).
#[test]
fn reset_cpu_returns_to_the_snapshot() {
    use unicorn_engine::RegisterX86;
    let (mut e, _) = setup(Cpu::X86_64);
    let r15 = Reg::Raw(RegisterX86::R15 as u32);
    e.write(CODE + 0x200, &[0x49, 0x89, 0xff, 0xc3]).unwrap();
    e.set_reg(r15, 7).unwrap();
    e.snapshot_cpu().unwrap();
    assert!(matches!(e.call(CODE + 0x200, &[0x1234], STACK_TOP, BUDGET).unwrap(), Outcome::Returned { .. }));
    assert_eq!(e.reg(r15).unwrap(), 0x1234);
    e.reset_cpu().unwrap();
    assert_eq!(e.reg(r15).unwrap(), 7);
}

/// Issue 12 item 6: an instruction that would leave the test (a system or
/// hypervisor call) stops the run as a trap naming it on every arch, and
/// a halt names the instruction that ended emulation.
#[test]
fn system_calls_and_halts_are_named_traps() {
    let words_be = |w: &[u32]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
    let cases: [(Cpu, Vec<u8>, &str); 13] = [
        // ci/hostile.sh: privileged writes Unicorn would run quietly
        (Cpu::X86_64, vec![0x31, 0xc0, 0x0f, 0x22, 0xd8, 0xc3], "mov to a control register"), // xor;mov %rax,%cr3
        (Cpu::X86_64, vec![0x0f, 0x30, 0xc3], "wrmsr"),
        (Cpu::Sparc32, words_be(&[0x8190_2000, 0x81c3_e008, 0x0100_0000]), "wr %wim"), // wr %g0,0,%wim; retl; nop
        (Cpu::Sparc32, words_be(&[0x8198_2000, 0x81c3_e008, 0x0100_0000]), "wr %tbr"), // wr %g0,0,%tbr; retl; nop
        (Cpu::X86_64, vec![0x0f, 0x05, 0xc3], "syscall"),                              // syscall ; ret
        (Cpu::X86_64, vec![0x0f, 0x34, 0xc3], "sysenter"),                             // sysenter ; ret
        (Cpu::X86_64, vec![0xcd, 0x80, 0xc3], "int 0x80 (a system call"),              // int $0x80 ; ret
        (Cpu::Arm64, words_le(&[0xd400_0003, 0xd65f_03c0]), "secure monitor call (smc)"), // smc #0 ; ret
        // an operation exception: opcode 0x00 is not an instruction
        (Cpu::S390x, vec![0x00, 0x00, 0x07, 0xfe], "program interruption"),
        (Cpu::X86_64, vec![0xf4, 0xc3], "`hlt`"), // hlt ; ret
        (Cpu::S390x, vec![0x83, 0x00, 0x00, 0x44, 0x07, 0xfe], "diag"), // diag %r0,%r0,0x44 ; br %r14
        (Cpu::Arm64, words_le(&[0xd503_207f, 0xd65f_03c0]), "`wfi`"), // wfi ; ret
        (Cpu::Riscv64, words_le(&[0x1050_0073, 0x0000_8067]), "`wfi`"), // wfi ; ret
    ];
    for (cpu, code, what) in cases {
        let (mut e, _) = setup(cpu);
        let at = CODE + 0x400;
        e.write(at, &code).unwrap();
        match e.call(at, &[], STACK_TOP, BUDGET).unwrap() {
            Outcome::Trap { pc, reason } => {
                assert!(reason.contains(what), "{cpu} {what}: {reason}");
                // (the x86 control-register write is the second instruction)
                let want = if what.starts_with("mov to a control") { at + 2 } else { at };
                assert_eq!(pc, want, "{cpu} {what}: {reason}");
            }
            other => panic!("{cpu} {what}: expected a trap, got {other:?}"),
        }
    }
    // Code rewritten over a `diag` no longer stops there.
    let (mut e, _) = setup(Cpu::S390x);
    e.write(CODE + 0x400, &[0x83, 0x00, 0x00, 0x44, 0x07, 0xfe]).unwrap();
    e.write(CODE + 0x400, &[0x07, 0x07, 0x07, 0x07, 0x07, 0xfe]).unwrap(); // nopr ; nopr ; br %r14
    assert!(matches!(e.call(CODE + 0x400, &[], STACK_TOP, BUDGET).unwrap(), Outcome::Returned { .. }));
}
