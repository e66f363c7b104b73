//! Limits on a module's shape, checked with one linear pass of `wasmparser`
//! before anything is compiled.
//!
//! Compiling is the expensive step a dropped file can trigger: Cranelift
//! spends time and memory roughly in proportion to the code it is given
//! (30 000 small functions took 34-53 s and 300 MB on a gateway). Counting
//! sections costs about a millisecond per MiB, so a pathological file is
//! refused in a time bounded by the file size limit, with a reason that says
//! which limit it broke. The limits sit far above what a Rust contract on
//! the SDK needs (the shipped ones have about 100 functions, under 40 KiB of code and one
//! memory).

use wasmparser::{Parser, Payload, TypeRef};

use crate::error::LoadError;

/// Shape limits of a contract file (a core module, or a component and every
/// module nested in it, counted together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleLimits {
    /// Functions with a body (imports are counted in `imports_max`).
    pub functions_max: u64,
    /// Bytes of code (all function bodies together): what compile time
    /// grows with.
    pub code_bytes_max: u64,
    /// Bytes of one function body.
    pub function_body_bytes_max: u64,
    /// Locals declared by one function.
    pub function_locals_max: u64,
    pub types_max: u64,
    pub imports_max: u64,
    pub exports_max: u64,
    pub globals_max: u64,
    /// Tables, defined or imported.
    pub tables_max: u64,
    /// Memories, defined or imported.
    pub memories_max: u64,
    pub data_segments_max: u64,
    pub element_segments_max: u64,
    pub custom_sections_max: u64,
    /// Core modules and components nested in a component.
    pub nested_modules_max: u64,
}

impl Default for ModuleLimits {
    fn default() -> Self {
        ModuleLimits {
            functions_max: 10_000,
            code_bytes_max: 2 << 20,
            function_body_bytes_max: 512 << 10,
            function_locals_max: 10_000,
            types_max: 10_000,
            imports_max: 1_000,
            exports_max: 1_000,
            globals_max: 1_000,
            tables_max: 4,
            memories_max: 2,
            data_segments_max: 1_000,
            element_segments_max: 1_000,
            custom_sections_max: 100,
            nested_modules_max: 16,
        }
    }
}

#[derive(Default)]
struct Counts {
    functions: u64,
    code_bytes: u64,
    types: u64,
    imports: u64,
    exports: u64,
    globals: u64,
    tables: u64,
    memories: u64,
    data_segments: u64,
    element_segments: u64,
    custom_sections: u64,
    nested_modules: u64,
}

fn over(what: &'static str, count: u64, limit: u64) -> Result<(), LoadError> {
    if count > limit {
        return Err(LoadError::OverLimit { what, count, limit });
    }
    Ok(())
}

fn malformed(error: wasmparser::BinaryReaderError) -> LoadError {
    LoadError::Compile(error.to_string())
}

/// Checks the shape of `bytes` against `limits`, plus the initial size of
/// each memory and table against the per-call limits (which instantiation
/// would enforce anyway, but only after compiling). Structural errors are
/// reported as [`LoadError::Compile`]; full validation comes later.
pub(crate) fn check_shape(
    bytes: &[u8],
    limits: &ModuleLimits,
    memory_bytes_max: u64,
    table_elements_max: u64,
) -> Result<(), LoadError> {
    let mut n = Counts::default();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                n.nested_modules += 1;
                over(
                    "nested modules and components",
                    n.nested_modules,
                    limits.nested_modules_max,
                )?;
            }
            Payload::TypeSection(reader) => {
                n.types += u64::from(reader.count());
                over("types", n.types, limits.types_max)?;
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(malformed)?;
                    n.imports += 1;
                    over("imports", n.imports, limits.imports_max)?;
                    match import.ty {
                        TypeRef::Table(table) => {
                            n.tables += 1;
                            over("tables", n.tables, limits.tables_max)?;
                            over("initial table elements", table.initial, table_elements_max)?;
                        }
                        TypeRef::Memory(memory) => {
                            n.memories += 1;
                            over("memories", n.memories, limits.memories_max)?;
                            over("initial memory bytes", memory_initial_bytes(&memory), memory_bytes_max)?;
                        }
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                n.functions += u64::from(reader.count());
                over("functions", n.functions, limits.functions_max)?;
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    let table = table.map_err(malformed)?;
                    n.tables += 1;
                    over("tables", n.tables, limits.tables_max)?;
                    over("initial table elements", table.ty.initial, table_elements_max)?;
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(malformed)?;
                    n.memories += 1;
                    over("memories", n.memories, limits.memories_max)?;
                    over("initial memory bytes", memory_initial_bytes(&memory), memory_bytes_max)?;
                }
            }
            Payload::GlobalSection(reader) => {
                n.globals += u64::from(reader.count());
                over("globals", n.globals, limits.globals_max)?;
            }
            Payload::ExportSection(reader) => {
                n.exports += u64::from(reader.count());
                over("exports", n.exports, limits.exports_max)?;
            }
            Payload::ElementSection(reader) => {
                n.element_segments += u64::from(reader.count());
                over("element segments", n.element_segments, limits.element_segments_max)?;
            }
            Payload::DataSection(reader) => {
                n.data_segments += u64::from(reader.count());
                over("data segments", n.data_segments, limits.data_segments_max)?;
            }
            Payload::CodeSectionStart { count, size, .. } => {
                // The declared count may differ from the function section's;
                // validation rejects that later, the larger one counts here.
                over("functions", u64::from(count), limits.functions_max)?;
                n.code_bytes += u64::from(size);
                over("code bytes", n.code_bytes, limits.code_bytes_max)?;
            }
            Payload::CodeSectionEntry(body) => {
                over(
                    "bytes in one function body",
                    body.range().len() as u64,
                    limits.function_body_bytes_max,
                )?;
                let mut locals = body.get_locals_reader().map_err(malformed)?;
                let mut n_locals = 0u64;
                for _ in 0..locals.get_count() {
                    let (count, _) = locals.read().map_err(malformed)?;
                    n_locals += u64::from(count);
                    over("locals in one function", n_locals, limits.function_locals_max)?;
                }
            }
            Payload::CustomSection(_) => {
                n.custom_sections += 1;
                over("custom sections", n.custom_sections, limits.custom_sections_max)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn memory_initial_bytes(memory: &wasmparser::MemoryType) -> u64 {
    let page_bytes = memory.page_size_log2.map_or(1 << 16, |log2| 1u64 << log2.min(63));
    memory.initial.saturating_mul(page_bytes)
}
