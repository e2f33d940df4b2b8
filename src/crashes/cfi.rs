//! Call frame information the debuginfo unwinder (framehop) gives up on:
//! rules that are DWARF expressions reading memory. GCC writes them for every
//! function that realigns its stack (ggml's AVX kernels: `CFA = *(rbp - 40)`,
//! callee-saved registers at `rbp - n`); framehop cannot read memory from an
//! expression, and where it cannot evaluate a rule it guesses with the frame
//! pointer (`rbp + 16`, 8 to 24 bytes off after a realignment), so a crash in
//! such a kernel unwound one frame and stopped there. This provider is asked
//! before framehop and answers only for frames whose CFA, return address or
//! rbp rule is an expression (those, and a few framehop could do, such as
//! PLT entries and the signal trampoline): it evaluates the
//! frame's `.eh_frame` row with gimli, reading the stack from the minidump.
//! x86-64 only (the register names are its).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, Encoding, EndianSlice, EvaluationResult,
    LittleEndian, Location, Register, RegisterRule, UnwindContext, UnwindSection, Value, X86_64,
};
use minidump::Module;
use minidump_unwind::{
    FileError, FileKind, FillSymbolError, FrameSymbolizer, FrameWalker, SymbolProvider,
};

type Slice<'a> = EndianSlice<'a, LittleEndian>;
type Fde<'a> = gimli::FrameDescriptionEntry<Slice<'a>>;

/// Most steps one expression may take (GCC's take two).
const MAX_EXPRESSION_STEPS: u32 = 256;

/// The callee-saved registers a frame's rules may restore.
const CALLEE_SAVED: [Register; 6] = [
    X86_64::RBX,
    X86_64::RBP,
    X86_64::R12,
    X86_64::R13,
    X86_64::R14,
    X86_64::R15,
];

/// A module's unwind sections, copied out of its file, at their addresses
/// in the file (its unrelocated virtual addresses).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnwindSections {
    /// `.eh_frame` and its address.
    pub eh_frame: (Vec<u8>, u64),
    /// `.eh_frame_hdr` (its binary search table) and its address, if present.
    pub eh_frame_hdr: Option<(Vec<u8>, u64)>,
    /// `.text`'s address (for text-relative pointers).
    pub text: u64,
    /// The lowest address a loadable segment asks for, which the module's
    /// base address in the process stands for (0 for a PIE).
    pub load_base: u64,
}

impl UnwindSections {
    /// Reads them from the ELF file at `path`; None if it has no `.eh_frame`.
    fn read(path: &str) -> Option<Self> {
        use object::{Object, ObjectSection, ObjectSegment};
        let file = std::fs::File::open(path).ok()?;
        let cache = object::ReadCache::new(file);
        let elf = object::File::parse(&cache).ok()?;
        let section = |name: &str| {
            let s = elf.section_by_name(name)?;
            Some((s.data().ok()?.to_vec(), s.address()))
        };
        Some(UnwindSections {
            eh_frame: section(".eh_frame")?,
            eh_frame_hdr: section(".eh_frame_hdr"),
            text: elf.section_by_name(".text").map_or(0, |s| s.address()),
            load_base: elf
                .segments()
                .map(|s| s.address() & !0xfff)
                .min()
                .unwrap_or(0),
        })
    }

    /// The entry describing the function at `address`, found through the
    /// binary search table when the module has one.
    fn fde(&self, address: u64) -> Option<(EhFrame<Slice<'_>>, BaseAddresses, Fde<'_>)> {
        let eh_frame = EhFrame::new(&self.eh_frame.0, LittleEndian);
        let mut bases = BaseAddresses::default()
            .set_eh_frame(self.eh_frame.1)
            .set_text(self.text);
        let hdr = match &self.eh_frame_hdr {
            Some((data, at)) => {
                bases = bases.set_eh_frame_hdr(*at);
                EhFrameHdr::new(data, LittleEndian).parse(&bases, 8).ok()
            }
            None => None,
        };
        let fde = match hdr.as_ref().and_then(|h| h.table()) {
            Some(table) => {
                table.fde_for_address(&eh_frame, &bases, address, EhFrame::cie_from_offset)
            }
            None => eh_frame.fde_for_address(&bases, address, EhFrame::cie_from_offset),
        }
        .ok()?;
        Some((eh_frame, bases, fde))
    }

    /// Unwinds the walker's frame, whose instruction lies at `address` in
    /// this module, if its row has an expression: sets the caller's stack
    /// pointer (the CFA), instruction pointer and the callee-saved registers
    /// the row restores (one whose rule cannot be evaluated is cleared).
    /// None (framehop's to unwind) when no row covers it, its rules are plain
    /// offsets, or its CFA or return address cannot be evaluated.
    pub fn unwind(&self, address: u64, walker: &mut (dyn FrameWalker + Send)) -> Option<()> {
        let (eh_frame, bases, fde) = self.fde(address)?;
        let encoding = fde.cie().encoding();
        let mut context = Box::new(UnwindContext::new());
        let row = fde
            .unwind_info_for_address(&eh_frame, &bases, &mut context, address)
            .ok()?;
        let expression = |rule: Option<RegisterRule<usize>>| {
            matches!(
                rule,
                Some(RegisterRule::Expression(_) | RegisterRule::ValExpression(_))
            )
        };
        if !matches!(row.cfa(), CfaRule::Expression(_))
            && !expression(row.register(X86_64::RA))
            && !expression(row.register(X86_64::RBP))
        {
            return None;
        }
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => {
                callee(walker, *register)?.checked_add_signed(*offset)?
            }
            CfaRule::Expression(e) => evaluate(e.get(&eh_frame).ok()?, encoding, walker)?,
        };
        let return_address = match row.register(X86_64::RA) {
            // The outermost frame: nothing called it.
            Some(RegisterRule::Undefined) => return None,
            Some(rule) => restore(&rule, cfa, &eh_frame, encoding, walker)?,
            // x86-64's call leaves it just below the CFA.
            None => walker.get_register_at_address(cfa.checked_sub(8)?)?,
        };
        let restored: Vec<(Register, Option<u64>)> = CALLEE_SAVED
            .iter()
            .filter_map(|&register| match row.register(register)? {
                // Unchanged: the walker forwards the callee's value.
                RegisterRule::SameValue => None,
                RegisterRule::Undefined => Some((register, None)),
                rule => Some((register, restore(&rule, cfa, &eh_frame, encoding, walker))),
            })
            .collect();
        // Names first: a walker left half-written would mislead framehop.
        let restored = restored
            .into_iter()
            .map(|(register, value)| Some((X86_64::register_name(register)?, value)))
            .collect::<Option<Vec<_>>>()?;
        walker.set_cfa(cfa)?;
        walker.set_ra(return_address)?;
        for (name, value) in restored {
            match value {
                Some(v) => walker.set_caller_register(name, v)?,
                None => walker.clear_caller_register(name),
            }
        }
        Some(())
    }
}

/// The callee's value of `register`.
fn callee(walker: &(dyn FrameWalker + Send), register: Register) -> Option<u64> {
    match register {
        X86_64::RA => walker.get_callee_register("rip"),
        r => walker.get_callee_register(X86_64::register_name(r)?),
    }
}

/// The caller's value of a register under `rule`, given the frame's `cfa`.
fn restore(
    rule: &RegisterRule<usize>,
    cfa: u64,
    eh_frame: &EhFrame<Slice<'_>>,
    encoding: Encoding,
    walker: &(dyn FrameWalker + Send),
) -> Option<u64> {
    match rule {
        RegisterRule::Offset(offset) => {
            walker.get_register_at_address(cfa.checked_add_signed(*offset)?)
        }
        RegisterRule::ValOffset(offset) => cfa.checked_add_signed(*offset),
        RegisterRule::Register(register) => callee(walker, *register),
        RegisterRule::Expression(e) => {
            walker.get_register_at_address(evaluate(e.get(eh_frame).ok()?, encoding, walker)?)
        }
        RegisterRule::ValExpression(e) => evaluate(e.get(eh_frame).ok()?, encoding, walker),
        _ => None,
    }
}

/// An expression's value (an address), reading the callee's registers and
/// the stack the minidump holds.
fn evaluate(
    expression: gimli::Expression<Slice<'_>>,
    encoding: Encoding,
    walker: &(dyn FrameWalker + Send),
) -> Option<u64> {
    let mut evaluation = expression.evaluation(encoding);
    evaluation.set_max_iterations(MAX_EXPRESSION_STEPS);
    let mut step = evaluation.evaluate().ok()?;
    loop {
        step = match step {
            EvaluationResult::Complete => break,
            EvaluationResult::RequiresRegister { register, .. } => {
                let value = callee(walker, register)?;
                evaluation
                    .resume_with_register(Value::Generic(value))
                    .ok()?
            }
            EvaluationResult::RequiresMemory {
                address,
                size: 8,
                space: None,
                ..
            } => {
                let value = walker.get_register_at_address(address)?;
                evaluation.resume_with_memory(Value::Generic(value)).ok()?
            }
            _ => return None,
        };
    }
    match evaluation.as_result() {
        [piece] => match piece.location {
            Location::Address { address } => Some(address),
            _ => None,
        },
        _ => None,
    }
}

/// The provider: each module's sections, read once per analysis.
#[derive(Debug, Default)]
pub struct ExpressionCfi {
    modules: Mutex<HashMap<String, Option<Arc<UnwindSections>>>>,
}

impl ExpressionCfi {
    fn sections(&self, module: &(dyn Module + Sync)) -> Option<Arc<UnwindSections>> {
        let path = module.code_file().into_owned();
        let mut modules = self.modules.lock().ok()?;
        modules
            .entry(path)
            .or_insert_with_key(|path| UnwindSections::read(path).map(Arc::new))
            .clone()
    }
}

#[async_trait]
impl SymbolProvider for ExpressionCfi {
    async fn fill_symbol(
        &self,
        _module: &(dyn Module + Sync),
        _frame: &mut (dyn FrameSymbolizer + Send),
    ) -> Result<(), FillSymbolError> {
        // Names come from the debuginfo provider.
        Err(FillSymbolError {})
    }

    async fn walk_frame(
        &self,
        module: &(dyn Module + Sync),
        walker: &mut (dyn FrameWalker + Send),
    ) -> Option<()> {
        let sections = self.sections(module)?;
        // The module's base in the process is its lowest segment's address.
        let address = walker
            .get_instruction()
            .checked_sub(module.base_address())?
            .checked_add(sections.load_base)?;
        sections.unwind(address, walker)
    }

    async fn get_file_path(
        &self,
        _module: &(dyn Module + Sync),
        _file_kind: FileKind,
    ) -> Result<std::path::PathBuf, FileError> {
        Err(FileError::NotFound)
    }
}

#[cfg(test)]
mod tests;
