//! A picture of a memory plan: each arena buffer a rectangle, time (the plan's lifetime
//! steps) across and arena offset down, at one concrete batch size. Buffers that overlap
//! in time never overlap in space, so a good plan is a tight, gap-free packing.

use super::MemoryPlan;
use crate::lower::Lowered;
use std::fmt::Write;
use strata_kernels::ir::Dim;

/// Drawing settings.
#[derive(Clone, Copy, Debug)]
pub struct SvgOptions {
    /// The batch size the per-batch extents resolve at.
    pub batch: u64,
    /// Picture width and height of the arena area, in pixels.
    pub width: f64,
    pub height: f64,
}

impl Default for SvgOptions {
    fn default() -> SvgOptions {
        SvgOptions {
            batch: 32,
            width: 960.0,
            height: 600.0,
        }
    }
}

/// One buffer's rectangle in plan units: half-steps `first..=last` (see
/// [`Lifetime`](super::memory_plan::Lifetime)), bytes `offset..offset + size`.
struct Block<'a> {
    name: &'a str,
    first: usize,
    last: usize,
    offset: u64,
    size: u64,
}

/// Bytes of buffer `b` at `batch` (every element type is 4 bytes wide).
fn buffer_bytes(l: &Lowered, b: usize, batch: u64) -> u64 {
    l.buffers[b]
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n,
            Dim::Batch => batch,
        })
        .product::<u64>()
        .saturating_mul(4)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The plan as an SVG document, one `<rect class="buffer">` per arena buffer.
pub fn plan_to_svg(l: &Lowered, plan: &MemoryPlan, options: &SvgOptions) -> String {
    let batch = options.batch;
    let blocks: Vec<Block> = (0..l.buffers.len())
        .filter_map(|b| {
            let (off, lt) = (plan.offsets[b]?, plan.lifetimes[b]?);
            Some(Block {
                name: &l.buffers[b].name,
                first: lt.first,
                last: lt.last,
                offset: off.resolve(batch)?,
                size: buffer_bytes(l, b, batch),
            })
        })
        .collect();
    let arena = plan.arena.resolve(batch).unwrap_or(0).max(1);
    let steps = blocks.iter().map(|b| b.last + 1).max().unwrap_or(1);
    let (margin_left, margin_top, margin_bottom) = (70.0, 40.0, 40.0);
    let (w, h) = (options.width, options.height);
    let x_of = |step: usize| margin_left + w * step as f64 / steps as f64;
    let y_of = |bytes: u64| margin_top + h * bytes as f64 / arena as f64;

    let mut out = String::new();
    let (total_w, total_h) = (margin_left + w + 20.0, margin_top + h + margin_bottom);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" viewBox="0 0 {total_w} {total_h}" font-family="sans-serif" font-size="10">"#
    );
    let _ = writeln!(
        out,
        r#"<rect class="background" x="0" y="0" width="{total_w}" height="{total_h}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{margin_left}" y="20" font-size="13">arena {arena} bytes at batch {batch}; {} buffers over {steps} half-steps (x: time, two half-steps per launch; y: arena offset)</text>"#,
        blocks.len()
    );
    let _ = writeln!(
        out,
        r##"<rect class="arena" x="{margin_left}" y="{margin_top}" width="{w}" height="{h}" fill="#f4f4f4" stroke="#888"/>"##
    );
    for (i, b) in blocks.iter().enumerate() {
        let (x, y) = (x_of(b.first), y_of(b.offset));
        let bw = (x_of(b.last + 1) - x).max(1.0);
        let bh = (y_of(b.offset + b.size) - y).max(1.0);
        // Golden-angle hues: neighbours get distinct colours.
        let hue = (i as f64 * 137.508) % 360.0;
        let _ = writeln!(
            out,
            r#"<rect class="buffer" x="{x:.2}" y="{y:.2}" width="{bw:.2}" height="{bh:.2}" fill="hsl({hue:.0}, 60%, 70%)" stroke="black" stroke-width="0.5"><title>{} : {} bytes at {}, steps {}..={}</title></rect>"#,
            escape(b.name),
            b.size,
            b.offset,
            b.first,
            b.last
        );
        if bh >= 9.0 && bw >= 6.0 * b.name.len() as f64 {
            let _ = writeln!(
                out,
                r#"<text x="{:.2}" y="{:.2}">{}</text>"#,
                x + 2.0,
                y + bh.min(12.0) - 2.0,
                escape(b.name)
            );
        }
    }
    let axis_y = margin_top + h + 14.0;
    let _ = writeln!(
        out,
        r#"<text x="{margin_left}" y="{axis_y}">half-step 0</text>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{axis_y}" text-anchor="end">half-step {steps}</text>"#,
        margin_left + w
    );
    let _ = writeln!(out, r#"<text x="4" y="{}">0</text>"#, margin_top + 4.0);
    let _ = writeln!(
        out,
        r#"<text x="4" y="{}">{arena} B</text>"#,
        margin_top + h
    );
    out.push_str("</svg>\n");
    out
}
