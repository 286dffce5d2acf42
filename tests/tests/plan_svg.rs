//! The memory-plan picture (`strata ir --stage plan --format svg`) is a well-formed SVG
//! with one rectangle per arena buffer.

use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::plan::svg::{SvgOptions, plan_to_svg};
use strata_tests::{example_files, load_example};

#[test]
fn plan_svg_has_one_rect_per_arena_buffer() {
    for path in example_files() {
        let source = load_example(&path);
        let compiled = compile(&source, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let svg = plan_to_svg(&compiled.lowered, &compiled.plan, &SvgOptions::default());
        assert!(svg.starts_with("<svg "), "{}", source.name);
        assert!(svg.trim_end().ends_with("</svg>"), "{}", source.name);
        let arena_buffers = compiled.plan.offsets.iter().filter(|o| o.is_some()).count();
        assert_eq!(
            svg.matches(r#"<rect class="buffer""#).count(),
            arena_buffers,
            "{}",
            source.name
        );
        // Every opened element is closed: rects hold a title, texts their label.
        assert_eq!(
            svg.matches("<rect").count(),
            svg.matches("/>").count() + svg.matches("</rect>").count(),
            "{svg}"
        );
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert_eq!(
            svg.matches("<title>").count(),
            svg.matches("</title>").count()
        );
    }
}
