//! Text form of the lowered program: buffers, then kernels in launch order.

use super::{BufferRole, Lowered};
use std::fmt::Write;

pub fn print_kernels(l: &Lowered) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} buffers, {} kernels",
        l.buffers.len(),
        l.kernels.len()
    );
    for (i, b) in l.buffers.iter().enumerate() {
        let role = match &b.role {
            BufferRole::Input(_) => "input".to_string(),
            BufferRole::Param(_) => "param".to_string(),
            BufferRole::Temp => "temp".to_string(),
            BufferRole::Window(w) => {
                let index = match (w.step, w.modulus) {
                    (0, _) => format!("{}", w.index(0)),
                    (_, 0) => format!("t + {}", w.shift),
                    (_, m) => format!("(t + {}) % {m}", w.shift),
                };
                if w.span == 1 {
                    format!("window of b{}, slice [{index}]", w.parent)
                } else {
                    format!(
                        "window of b{}, slices [{index}..{index} + {}]",
                        w.parent, w.span
                    )
                }
            }
        };
        let dims: Vec<String> = b.shape.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(
            out,
            "buffer b{i} {} : {:?}[{}] {role}",
            b.name,
            b.dtype,
            dims.join(", ")
        );
    }
    for (name, b) in &l.inputs {
        let _ = writeln!(out, "input {name} = b{b}");
    }
    for (name, b) in &l.outputs {
        let _ = writeln!(out, "output {name} = b{b}");
    }
    for (i, launch) in l.launches.iter().enumerate() {
        for lp in l.loops.iter().filter(|lp| lp.start == i) {
            let order = if lp.reverse { "down to 0" } else { "up" };
            let _ = writeln!(
                out,
                "\nloop t over {} steps, {order}: launches {}..{}",
                lp.count, lp.start, lp.end
            );
        }
        out.push('\n');
        let _ = write!(out, "{}", l.kernels[launch.kernel]);
        let binds: Vec<String> = launch.bindings.iter().map(|b| format!("b{b}")).collect();
        let _ = writeln!(out, "  bound to ({})", binds.join(", "));
    }
    out
}
