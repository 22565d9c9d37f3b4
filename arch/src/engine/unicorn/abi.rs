//! Per-architecture tables for the Unicorn engine: which Unicorn register
//! plays which [`Reg`] role, the C calling convention used by
//! [`Engine::call`](crate::engine::Engine::call), and the Unicorn mode.
//!
//! Everything architecture-specific that `UnicornEngine` needs lives here so
//! that the engine itself stays uniform across the five arches.

use unicorn_engine::{Arch, Mode, RegisterARM64, RegisterRISCV, RegisterS390X, RegisterSPARC, RegisterX86};

use crate::engine::{Cpu, Reg};

/// How a role maps onto a Unicorn register.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum UcReg {
    /// An ordinary register id for `uc_reg_read`/`uc_reg_write`.
    Plain(i32),
    /// An AArch64 system register reached through the CP-register API
    /// (`op0, op1, crn, crm, op2`).
    Arm64Sys { op0: u32, op1: u32, crn: u32, crm: u32, op2: u32 },
}

/// `TPIDR_EL1`: S3_0_C13_C0_4.
pub(crate) const TPIDR_EL1: UcReg = UcReg::Arm64Sys { op0: 3, op1: 0, crn: 13, crm: 0, op2: 4 };
/// `TPIDR_EL2`: S3_4_C13_C0_2.
pub(crate) const TPIDR_EL2: UcReg = UcReg::Arm64Sys { op0: 3, op1: 4, crn: 13, crm: 0, op2: 2 };

/// The static description of one architecture.
pub(crate) struct Abi {
    pub arch: Arch,
    pub mode: Mode,
    /// Register width in bytes (sparc32: 4).
    pub reg_bytes: u32,
    pub pc: i32,
    pub sp: i32,
    pub args: &'static [i32],
    pub ret: i32,
    /// `None`: the return address is pushed on the stack (x86_64).
    pub return_address: Option<i32>,
    /// Bytes below `stack_top` reserved for the callee, per the ABI
    /// (sparc32: the 64-byte window save area plus hidden/outgoing argument
    /// words = 96; s390x: the 160-byte register save area).
    pub stack_reserve: u64,
    /// The return-address value that makes the callee return to the
    /// trampoline: sparc's `ret`/`retl` jump to `%i7 + 8`/`%o7 + 8`.
    pub return_bias: u64,
    /// Instruction bytes filling the trampoline page: they trap if ever
    /// executed (the code hook stops the CPU before they are).
    pub trap_fill: &'static [u8],
    /// Default trampoline page: near the top of the low half of the
    /// address space, far from kernel-like layouts.
    pub default_trampoline: u64,
}

const X86_ARGS: [i32; 6] = [
    RegisterX86::RDI as i32,
    RegisterX86::RSI as i32,
    RegisterX86::RDX as i32,
    RegisterX86::RCX as i32,
    RegisterX86::R8 as i32,
    RegisterX86::R9 as i32,
];
const ARM64_ARGS: [i32; 8] = [
    RegisterARM64::X0 as i32,
    RegisterARM64::X1 as i32,
    RegisterARM64::X2 as i32,
    RegisterARM64::X3 as i32,
    RegisterARM64::X4 as i32,
    RegisterARM64::X5 as i32,
    RegisterARM64::X6 as i32,
    RegisterARM64::X7 as i32,
];
const SPARC_ARGS: [i32; 6] = [
    RegisterSPARC::O0 as i32,
    RegisterSPARC::O1 as i32,
    RegisterSPARC::O2 as i32,
    RegisterSPARC::O3 as i32,
    RegisterSPARC::O4 as i32,
    RegisterSPARC::O5 as i32,
];
const S390X_ARGS: [i32; 5] = [
    RegisterS390X::R2 as i32,
    RegisterS390X::R3 as i32,
    RegisterS390X::R4 as i32,
    RegisterS390X::R5 as i32,
    RegisterS390X::R6 as i32,
];
const RISCV_ARGS: [i32; 8] = [
    RegisterRISCV::A0 as i32,
    RegisterRISCV::A1 as i32,
    RegisterRISCV::A2 as i32,
    RegisterRISCV::A3 as i32,
    RegisterRISCV::A4 as i32,
    RegisterRISCV::A5 as i32,
    RegisterRISCV::A6 as i32,
    RegisterRISCV::A7 as i32,
];

/// Top 64 KiB of the low half of a 48-bit address space (fits arm64's
/// 48-bit physical space with the MMU off, x86_64's canonical low half,
/// riscv64 M-mode and s390x).
const HIGH_LOW_HALF_64: u64 = 0x0000_7fff_ffff_0000;
/// sparc32: top of the low 2 GiB (the kernel lives at 0xf000_0000 and up).
const HIGH_LOW_HALF_32: u64 = 0x7fff_0000;

static X86_64: Abi = Abi {
    arch: Arch::X86,
    mode: Mode::MODE_64,
    reg_bytes: 8,
    pc: RegisterX86::RIP as i32,
    sp: RegisterX86::RSP as i32,
    args: &X86_ARGS,
    ret: RegisterX86::RAX as i32,
    return_address: None,
    stack_reserve: 0,
    return_bias: 0,
    // ud2
    trap_fill: &[0x0f, 0x0b],
    default_trampoline: HIGH_LOW_HALF_64,
};

static ARM64: Abi = Abi {
    arch: Arch::ARM64,
    mode: Mode::LITTLE_ENDIAN,
    reg_bytes: 8,
    pc: RegisterARM64::PC as i32,
    sp: RegisterARM64::SP as i32,
    args: &ARM64_ARGS,
    ret: RegisterARM64::X0 as i32,
    return_address: Some(RegisterARM64::X30 as i32),
    stack_reserve: 0,
    return_bias: 0,
    // udf #0
    trap_fill: &[0, 0, 0, 0],
    default_trampoline: HIGH_LOW_HALF_64,
};

static SPARC32: Abi = Abi {
    arch: Arch::SPARC,
    mode: Mode(Mode::SPARC32.0 | Mode::BIG_ENDIAN.0),
    reg_bytes: 4,
    pc: RegisterSPARC::PC as i32,
    sp: RegisterSPARC::O6 as i32,
    args: &SPARC_ARGS,
    ret: RegisterSPARC::O0 as i32,
    return_address: Some(RegisterSPARC::O7 as i32),
    stack_reserve: 96,
    return_bias: 8,
    // unimp 0
    trap_fill: &[0, 0, 0, 0],
    default_trampoline: HIGH_LOW_HALF_32,
};

static S390X: Abi = Abi {
    arch: Arch::S390X,
    mode: Mode::BIG_ENDIAN,
    reg_bytes: 8,
    pc: RegisterS390X::PC as i32,
    sp: RegisterS390X::R15 as i32,
    args: &S390X_ARGS,
    ret: RegisterS390X::R2 as i32,
    return_address: Some(RegisterS390X::R14 as i32),
    stack_reserve: 160,
    return_bias: 0,
    // opcode 0x00: illegal
    trap_fill: &[0, 0],
    default_trampoline: HIGH_LOW_HALF_64,
};

static RISCV64: Abi = Abi {
    arch: Arch::RISCV,
    mode: Mode::RISCV64,
    reg_bytes: 8,
    pc: RegisterRISCV::PC as i32,
    sp: RegisterRISCV::SP as i32,
    args: &RISCV_ARGS,
    ret: RegisterRISCV::A0 as i32,
    return_address: Some(RegisterRISCV::RA as i32),
    stack_reserve: 0,
    return_bias: 0,
    // all-zero word: illegal
    trap_fill: &[0, 0, 0, 0],
    default_trampoline: HIGH_LOW_HALF_64,
};

/// The table for `cpu`, or `None` for arches Unicorn lacks (Alpha).
pub(crate) fn abi(cpu: Cpu) -> Option<&'static Abi> {
    match cpu {
        Cpu::X86_64 => Some(&X86_64),
        Cpu::Arm64 => Some(&ARM64),
        Cpu::Sparc32 => Some(&SPARC32),
        Cpu::S390x => Some(&S390X),
        Cpu::Riscv64 => Some(&RISCV64),
        Cpu::Alpha => None,
    }
}

/// The Unicorn register behind a role on `cpu`, or `None` when the arch has
/// no such register.
pub(crate) fn reg(cpu: Cpu, abi: &Abi, reg: Reg) -> Option<UcReg> {
    let plain = |id: i32| Some(UcReg::Plain(id));
    match reg {
        Reg::Pc => plain(abi.pc),
        Reg::Sp => plain(abi.sp),
        Reg::Ret => plain(abi.ret),
        Reg::Arg(n) => abi.args.get(n as usize).copied().map(UcReg::Plain),
        Reg::ReturnAddress => abi.return_address.map(UcReg::Plain),
        Reg::Raw(id) => i32::try_from(id).ok().map(UcReg::Plain),
        Reg::GsBase if cpu == Cpu::X86_64 => plain(RegisterX86::GS_BASE as i32),
        Reg::TpidrEl1 if cpu == Cpu::Arm64 => Some(TPIDR_EL1),
        Reg::TpidrEl2 if cpu == Cpu::Arm64 => Some(TPIDR_EL2),
        Reg::G6 if cpu == Cpu::Sparc32 => plain(RegisterSPARC::G6 as i32),
        Reg::Tp if cpu == Cpu::Riscv64 => plain(RegisterRISCV::TP as i32),
        Reg::Gp if cpu == Cpu::Riscv64 => plain(RegisterRISCV::GP as i32),
        Reg::PswMask if cpu == Cpu::S390x => plain(RegisterS390X::PSWM as i32),
        Reg::SpEl0 if cpu == Cpu::Arm64 => plain(RegisterARM64::SP_EL0 as i32),
        _ => None,
    }
}
