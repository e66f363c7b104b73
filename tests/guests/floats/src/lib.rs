//! Float-heavy contract for the cross-architecture determinism check
//! (`cargo xtask cross-determinism`): computes f32/f64 results whose bits
//! differ between x86-64 and aarch64 unless the host makes them agree
//! (NaN signs and payloads, relaxed SIMD), and returns every result's raw
//! bits in its outcome and in storage.
//!
//! Parameter `set`: `scalar`, `simd`, `relaxed` or `loop` (with `n`).

use std::hint::black_box as bb;

use wallance_sdk::{Contract, Outcome, Purchase, ServiceInfo, storage};

struct Floats;

/// Results as (name, bits); f32 bits are zero-extended to 64.
type Bits = Vec<(String, String)>;

fn f32b(out: &mut Bits, name: &str, x: f32) {
    out.push((name.into(), format!("{:08x}", x.to_bits())));
}

fn f64b(out: &mut Bits, name: &str, x: f64) {
    out.push((name.into(), format!("{:016x}", x.to_bits())));
}

fn scalar() -> Bits {
    let mut out = Bits::new();
    let (zero, one, neg, inf) = (bb(0.0f32), bb(1.0f32), bb(-1.0f32), bb(f32::INFINITY));
    let (zero64, neg64, inf64) = (bb(0.0f64), bb(-1.0f64), bb(f64::INFINITY));
    // NaN-producing operations: the sign (and payload) of the NaN is the
    // CPU's choice.
    f32b(&mut out, "f32 0/0", zero / zero);
    f32b(&mut out, "f32 sqrt(-1)", neg.sqrt());
    f32b(&mut out, "f32 inf-inf", inf - inf);
    f32b(&mut out, "f32 inf*0", inf * zero);
    f64b(&mut out, "f64 0/0", zero64 / zero64);
    f64b(&mut out, "f64 sqrt(-1)", neg64.sqrt());
    f64b(&mut out, "f64 inf-inf", inf64 - inf64);
    f64b(&mut out, "f64 inf*0", inf64 * zero64);
    // NaNs with payloads and signs going through arithmetic: which
    // operand's payload survives differs between x86 and Arm.
    let nan_a = bb(f32::from_bits(0x7fc0_0001));
    let nan_b = bb(f32::from_bits(0xffc0_0002));
    let snan = bb(f32::from_bits(0x7f80_0003));
    f32b(&mut out, "f32 nanA+nanB", nan_a + nan_b);
    f32b(&mut out, "f32 nanB+nanA", nan_b + nan_a);
    f32b(&mut out, "f32 nanB*1", nan_b * one);
    f32b(&mut out, "f32 snan+0", snan + zero);
    f32b(&mut out, "f32 nanA+snan", nan_a + snan);
    let nan64_a = bb(f64::from_bits(0x7ff8_0000_0000_0001));
    let nan64_b = bb(f64::from_bits(0xfff8_0000_0000_0002));
    f64b(&mut out, "f64 nanA+nanB", nan64_a + nan64_b);
    f64b(&mut out, "f64 nanB-nanA", nan64_b - nan64_a);
    // Conversions between widths carry NaNs too.
    f64b(&mut out, "f64 promote(nanB)", f64::from(nan_b));
    f32b(&mut out, "f32 demote(nan64B)", nan64_b as f32);
    f32b(&mut out, "f32 demote(1e300)", bb(1e300f64) as f32);
    // Sign operations are bit operations in wasm: never canonicalized.
    f32b(&mut out, "f32 -nanA", -nan_a);
    f32b(&mut out, "f32 abs(nanB)", nan_b.abs());
    f32b(&mut out, "f32 copysign(nanA,-1)", nan_a.copysign(neg));
    // min/max: Rust's (IEEE minNum) and wasm's own (NaN-propagating,
    // through SIMD lane 0 below); -0 against +0.
    f32b(&mut out, "f32 min(nanB,1)", nan_b.min(one));
    f32b(&mut out, "f32 max(1,nanA)", one.max(nan_a));
    f32b(&mut out, "f32 min(-0,0)", bb(-0.0f32).min(zero));
    f64b(&mut out, "f64 max(nanB,-1)", nan64_b.max(neg64));
    // Rounding, fused multiply-add (software fmaf in the contract) and
    // libm functions (software too: deterministic by construction).
    f32b(
        &mut out,
        "f32 mul_add",
        bb(1.0000001f32).mul_add(bb(1.0000001), bb(-1.0000002)),
    );
    f64b(&mut out, "f64 mul_add", bb(0.1f64).mul_add(bb(10.0), bb(-1.0)));
    f64b(&mut out, "f64 sin(1e6)", bb(1e6f64).sin());
    f64b(&mut out, "f64 exp(-0.5)", bb(-0.5f64).exp());
    f64b(&mut out, "f64 ln(nanB)", nan64_b.ln());
    f32b(&mut out, "f32 powf(-8,1/3)", bb(-8.0f32).powf(1.0 / 3.0));
    f32b(&mut out, "f32 round(2.5)", bb(2.5f32).round());
    f32b(&mut out, "f32 nearest(2.5)", bb(2.5f32).round_ties_even());
    f64b(&mut out, "f64 trunc(-0.7)", bb(-0.7f64).trunc());
    f32b(&mut out, "f32 subnormal*0.5", bb(f32::from_bits(1)) * bb(0.5));
    f64b(&mut out, "f64 1/3", bb(1.0f64) / bb(3.0));
    // Float to integer: saturating `as` (wasm's trunc_sat).
    out.push(("i32 nanB as i32".into(), format!("{:08x}", nan_b as i32)));
    out.push(("i32 1e10 as i32".into(), format!("{:08x}", bb(1e10f32) as i32)));
    out.push(("u64 -1 as u64".into(), format!("{:016x}", neg64 as u64)));
    out
}

#[cfg(target_arch = "wasm32")]
mod simd {
    use core::arch::wasm32::*;

    use super::{Bits, bb};

    fn v4(out: &mut Bits, name: &str, v: v128) {
        let lanes = [
            u32x4_extract_lane::<0>(v),
            u32x4_extract_lane::<1>(v),
            u32x4_extract_lane::<2>(v),
            u32x4_extract_lane::<3>(v),
        ];
        out.push((
            name.into(),
            format!("{:08x}{:08x}{:08x}{:08x}", lanes[0], lanes[1], lanes[2], lanes[3]),
        ));
    }

    fn nans() -> (v128, v128) {
        let a = f32x4(f32::from_bits(0x7fc0_0001), 1.0, -0.0, f32::INFINITY);
        let b = f32x4(1.0, f32::from_bits(0xffc0_0002), 0.0, -3.0e9);
        (bb(a), bb(b))
    }

    /// Deterministic SIMD: wasm defines every lane's result up to NaN bits.
    #[target_feature(enable = "simd128")]
    pub fn simd() -> Bits {
        let mut out = Bits::new();
        let (a, b) = nans();
        v4(&mut out, "f32x4 min", f32x4_min(a, b));
        v4(&mut out, "f32x4 max", f32x4_max(a, b));
        // LLVM coalesces target features over the whole wasm module: with
        // `relaxed()` below enabling relaxed-simd, it emits this pmin as
        // `f32x4.relaxed_min` (allowed: pmin is one of its results). So a
        // contract author asking for deterministic SIMD can get relaxed
        // SIMD without writing any.
        v4(&mut out, "f32x4 pmin", f32x4_pmin(a, b));
        v4(&mut out, "f32x4 add", f32x4_add(a, b));
        v4(&mut out, "f32x4 div(a,0)", f32x4_div(a, bb(f32x4_splat(0.0))));
        v4(&mut out, "f32x4 sqrt(b)", f32x4_sqrt(b));
        v4(
            &mut out,
            "f32x4 mul(inf,b)",
            f32x4_mul(bb(f32x4_splat(f32::INFINITY)), b),
        );
        v4(&mut out, "i32x4 trunc_sat(b)", i32x4_trunc_sat_f32x4(b));
        let c = bb(f64x2(f64::from_bits(0xfff8_0000_0000_0002), 2.0));
        let d = bb(f64x2(1.0, f64::NAN));
        v4(&mut out, "f64x2 min", f64x2_min(c, d));
        v4(&mut out, "f64x2 sub", f64x2_sub(c, d));
        v4(&mut out, "f32x4 demote(f64x2)", f32x4_demote_f64x2_zero(c));
        out
    }

    /// Relaxed SIMD: the spec lets each lane's result depend on the CPU
    /// (fused or not, which operand a min returns, out-of-range
    /// conversions, swizzle indices past 15).
    #[target_feature(enable = "simd128,relaxed-simd")]
    pub fn relaxed() -> Bits {
        let mut out = Bits::new();
        let (a, b) = nans();
        // 1 + 2^-23 squared minus (1 + 2^-22): 2^-46 when fused, 0 when not.
        let e = bb(f32x4_splat(1.0 + f32::EPSILON));
        let minus = bb(f32x4_splat(-(1.0 + 2.0 * f32::EPSILON)));
        v4(&mut out, "f32x4 relaxed_madd", f32x4_relaxed_madd(e, e, minus));
        let e64 = bb(f64x2_splat(1.0 + f64::EPSILON));
        let minus64 = bb(f64x2_splat(-(1.0 + 2.0 * f64::EPSILON)));
        v4(&mut out, "f64x2 relaxed_madd", f64x2_relaxed_madd(e64, e64, minus64));
        v4(&mut out, "f32x4 relaxed_min", f32x4_relaxed_min(a, b));
        v4(&mut out, "f32x4 relaxed_max", f32x4_relaxed_max(b, a));
        v4(&mut out, "i32x4 relaxed_trunc(b)", i32x4_relaxed_trunc_f32x4(b));
        v4(&mut out, "u32x4 relaxed_trunc(b)", u32x4_relaxed_trunc_f32x4(b));
        let table = bb(u8x16(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16));
        let index = bb(u8x16(0, 17, 31, 128, 200, 255, 16, 15, 1, 2, 3, 4, 5, 6, 7, 8));
        v4(&mut out, "i8x16 relaxed_swizzle", i8x16_relaxed_swizzle(table, index));
        let mask = bb(u32x4(0x8000_0000, 0x7fff_ffff, 0x0000_ffff, 0xffff_0000));
        v4(
            &mut out,
            "i32x4 relaxed_laneselect",
            i32x4_relaxed_laneselect(a, b, mask),
        );
        let q = bb(i16x8_splat(i16::MIN));
        v4(&mut out, "i16x8 relaxed_q15mulr(min,min)", i16x8_relaxed_q15mulr(q, q));
        let bytes = bb(i8x16_splat(-128));
        v4(
            &mut out,
            "i16x8 relaxed_dot(-128,-128)",
            i16x8_relaxed_dot_i8x16_i7x16(bytes, bytes),
        );
        out
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod simd {
    // Only so the crate also type-checks for the host.
    pub fn simd() -> super::Bits {
        Vec::new()
    }
    pub fn relaxed() -> super::Bits {
        Vec::new()
    }
}

/// A float-heavy loop (a Mandelbrot escape count over a grid, plus a
/// running f64 sum), reported as bits.
fn float_loop(n: u32) -> Bits {
    let mut escaped = 0u64;
    let mut sum = 0.0f64;
    let mut sum32 = 0.0f32;
    for i in 0..n {
        for j in 0..n {
            let cx = -2.0 + 2.5 * f64::from(i) / f64::from(n);
            let cy = -1.25 + 2.5 * f64::from(j) / f64::from(n);
            let (mut x, mut y) = (0.0f64, 0.0f64);
            let mut k = 0;
            while k < 64 && x * x + y * y <= 4.0 {
                let t = x * x - y * y + cx;
                y = 2.0 * x * y + cy;
                x = t;
                k += 1;
            }
            escaped += k;
            sum += (x * y).sqrt() + x.hypot(y).ln();
            sum32 += (x as f32 / y as f32).sqrt();
        }
    }
    let mut out = Bits::new();
    out.push(("loop escaped".into(), escaped.to_string()));
    f64b(&mut out, "loop sum f64", sum);
    f32b(&mut out, "loop sum f32", sum32);
    out
}

impl Contract for Floats {
    fn info() -> ServiceInfo {
        ServiceInfo::new("floats", 1, "Float results, as raw bits", "1")
    }

    fn purchase(purchase: Purchase) -> Result<Outcome, String> {
        let set = purchase.param("set").unwrap_or("scalar");
        let bits = match set {
            "scalar" => scalar(),
            // SAFETY: wasmtime enables SIMD and relaxed SIMD by default; a
            // host without them refuses the module at load, never runs it.
            #[allow(unused_unsafe)]
            "simd" => unsafe { simd::simd() },
            #[allow(unused_unsafe)]
            "relaxed" => unsafe { simd::relaxed() },
            "loop" => float_loop(purchase.param_parsed("n")?),
            other => return Err(format!("unknown set {other:?}")),
        };
        let mut outcome = Outcome::new(format!("{} {set} results", bits.len()));
        let mut all = Vec::new();
        for (name, value) in &bits {
            storage::set_string(&format!("{set}/{name}"), value);
            all.extend_from_slice(value.as_bytes());
            outcome = outcome.with(name.clone(), value);
        }
        // Every result's bits in one value too, as raw bytes.
        storage::set(&format!("{set}/all"), &all);
        Ok(outcome)
    }
}

wallance_sdk::export_contract!(Floats);
