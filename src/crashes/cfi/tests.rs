//! The expression rules against a synthetic `.eh_frame` written the way GCC
//! writes a realigned function's, and the lookup against this binary's own.

use gimli::Format;
use gimli::write::{
    self, Address, CallFrameInstruction, CommonInformationEntry, EndianVec, FrameDescriptionEntry,
    FrameTable,
};

use super::*;

const FUNCTION: u64 = 0x1000;

/// An `.eh_frame` with one function whose rules are GCC's for a
/// realigned stack (as ggml's `ggml_compute_forward_rms_norm_mul_fused`
/// has them): `lea 0x8(%rsp),%r10; and $-32,%rsp; push -8(%r10);
/// push %rbp; mov %rsp,%rbp; push %r15..%r12; push %r10; push %rbx`.
fn realigned() -> UnwindSections {
    let encoding = Encoding {
        format: Format::Dwarf32,
        version: 1,
        address_size: 8,
    };
    let rbp_minus = |n: i64| {
        let mut e = write::Expression::new();
        e.op_breg(X86_64::RBP, -n);
        e
    };
    let mut cie = CommonInformationEntry::new(encoding, 1, -8, X86_64::RA);
    cie.add_instruction(CallFrameInstruction::Cfa(X86_64::RSP, 8));
    cie.add_instruction(CallFrameInstruction::Offset(X86_64::RA, -8));
    let mut fde = FrameDescriptionEntry::new(Address::Constant(FUNCTION), 0x700);
    fde.add_instruction(5, CallFrameInstruction::Cfa(X86_64::R10, 0));
    fde.add_instruction(
        0x14,
        CallFrameInstruction::Expression(X86_64::RBP, rbp_minus(0)),
    );
    let mut cfa = rbp_minus(40);
    cfa.op_deref();
    fde.add_instruction(0x1e, CallFrameInstruction::CfaExpression(cfa));
    for (i, r) in [X86_64::R15, X86_64::R14, X86_64::R13, X86_64::R12]
        .into_iter()
        .enumerate()
    {
        let n = 8 * (i as i64 + 1);
        fde.add_instruction(0x1e, CallFrameInstruction::Expression(r, rbp_minus(n)));
    }
    fde.add_instruction(
        0x26,
        CallFrameInstruction::Expression(X86_64::RBX, rbp_minus(48)),
    );
    let mut table = FrameTable::default();
    let cie = table.add_cie(cie);
    table.add_fde(cie, fde);
    let mut eh_frame = write::EhFrame(EndianVec::new(LittleEndian));
    table.write_eh_frame(&mut eh_frame).unwrap();
    UnwindSections {
        eh_frame: (eh_frame.0.into_vec(), 0),
        ..UnwindSections::default()
    }
}

#[derive(Default)]
struct Walker {
    callee: HashMap<&'static str, u64>,
    stack: HashMap<u64, u64>,
    caller: HashMap<String, u64>,
}

impl FrameWalker for Walker {
    fn get_instruction(&self) -> u64 {
        self.callee["rip"]
    }
    fn has_grand_callee(&self) -> bool {
        false
    }
    fn get_grand_callee_parameter_size(&self) -> u32 {
        0
    }
    fn get_register_at_address(&self, address: u64) -> Option<u64> {
        self.stack.get(&address).copied()
    }
    fn get_callee_register(&self, name: &str) -> Option<u64> {
        self.callee.get(name).copied()
    }
    fn set_caller_register(&mut self, name: &str, val: u64) -> Option<()> {
        self.caller.insert(name.into(), val);
        Some(())
    }
    fn clear_caller_register(&mut self, name: &str) {
        self.caller.remove(name);
    }
    fn set_cfa(&mut self, val: u64) -> Option<()> {
        self.set_caller_register("rsp", val)
    }
    fn set_ra(&mut self, val: u64) -> Option<()> {
        self.set_caller_register("rip", val)
    }
}

/// The caller's stack pointer on entry to the function is `cfa - 8`;
/// the function aligned its own to 32 below that.
const CFA: u64 = 0x7ffd_0000_1048;
const RBP: u64 = 0x7ffd_0000_1020;
const RETURN: u64 = 0x5555_0000_4242;

fn stopped_at(offset: u64) -> Walker {
    let mut w = Walker::default();
    w.callee.insert("rip", FUNCTION + offset);
    w.callee.insert("rsp", RBP - 0x180);
    w.callee.insert("rbp", RBP);
    w.callee.insert("r10", CFA);
    w.stack.insert(CFA - 8, RETURN);
    w.stack.insert(RBP + 8, RETURN); // the copy the prologue pushed
    w.stack.insert(RBP, 0x7ffd_0000_2000); // the caller's rbp
    for (n, value) in [(8, 15), (16, 14), (24, 13), (32, 12), (40, CFA), (48, 3)] {
        w.stack.insert(RBP - n, value);
    }
    w
}

#[test]
fn a_realigned_frame_unwinds_to_the_cfa_its_expression_reads_and_restores_its_registers() {
    let sections = realigned();
    let mut w = stopped_at(0x3cc);
    sections.unwind(FUNCTION + 0x3cc, &mut w).unwrap();
    // Not where frame-pointer unwinding guesses it (rbp + 16): the
    // realignment moved the stack by 24 bytes.
    assert_ne!(CFA, RBP + 16);
    let expected: HashMap<String, u64> = [
        ("rsp", CFA),
        ("rip", RETURN),
        ("rbp", 0x7ffd_0000_2000),
        ("rbx", 3),
        ("r12", 12),
        ("r13", 13),
        ("r14", 14),
        ("r15", 15),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(w.caller, expected);
}

#[test]
fn frames_whose_rules_are_plain_offsets_are_left_to_framehop() {
    let sections = realigned();
    // In the prologue: the CFA is r10, and rbp is not saved yet.
    let mut w = stopped_at(8);
    assert!(sections.unwind(FUNCTION + 8, &mut w).is_none());
    assert!(w.caller.is_empty(), "{:?}", w.caller);
    // Past saving rbp by an expression: this provider's.
    let mut w = stopped_at(0x18);
    sections.unwind(FUNCTION + 0x18, &mut w).unwrap();
    assert_eq!(w.caller["rsp"], CFA);
    assert_eq!(w.caller["rip"], RETURN);
    assert_eq!(w.caller["rbp"], 0x7ffd_0000_2000);
    assert!(
        !w.caller.contains_key("rbx"),
        "not saved yet: {:?}",
        w.caller
    );
}

#[test]
fn a_stack_the_minidump_lacks_or_an_address_no_rule_covers_unwinds_nothing() {
    let sections = realigned();
    let mut w = stopped_at(0x3cc);
    w.stack.remove(&(RBP - 40));
    assert!(sections.unwind(FUNCTION + 0x3cc, &mut w).is_none());
    assert!(w.caller.is_empty(), "{:?}", w.caller);
    let mut w = stopped_at(0x3cc);
    assert!(sections.unwind(FUNCTION + 0x800, &mut w).is_none());
    assert!(w.caller.is_empty(), "{:?}", w.caller);
}

#[inline(never)]
fn marker() -> u64 {
    std::hint::black_box(7)
}

#[test]
fn the_running_binary_s_table_finds_its_own_functions_entry() {
    let exe = std::env::current_exe().unwrap();
    let sections = UnwindSections::read(exe.to_str().unwrap()).unwrap();
    assert!(sections.eh_frame_hdr.is_some(), "the binary search table");
    // Where the binary is mapped: its first mapping, from offset 0.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let base = maps
        .lines()
        .find(|l| l.ends_with(exe.to_str().unwrap()) && l.split(' ').nth(2) == Some("00000000"))
        .and_then(|l| u64::from_str_radix(l.split('-').next().unwrap(), 16).ok())
        .unwrap();
    assert_eq!(marker(), 7);
    let entry = marker as fn() -> u64 as usize as u64 - base + sections.load_base;
    let (_, _, fde) = sections.fde(entry + 1).unwrap();
    assert_eq!(
        fde.initial_address(),
        entry,
        "the entry of the function asked about"
    );
    // Its rules are plain offsets (rsp + 8 at entry): framehop's to unwind.
    let mut w = Walker::default();
    w.callee.insert("rip", entry);
    w.callee.insert("rsp", 0x7ffd_0000_1000);
    w.stack.insert(0x7ffd_0000_1000, RETURN);
    assert!(sections.unwind(entry, &mut w).is_none());
}
