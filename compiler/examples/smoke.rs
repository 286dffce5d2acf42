fn main() {
    for f in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&f).unwrap();
        let src = strata_compiler::syntax::SourceFile::new(f.clone(), text);
        match strata_compiler::syntax::parse(&src.text)
            .and_then(|p| strata_compiler::elaborate::elaborate(&p, &Default::default()))
        {
            Ok(e) => print!(
                "{}",
                strata_compiler::ir::print::print_graph(&e.graph, Some(&src))
            ),
            Err(d) => print!("{}", d.render(&src)),
        }
    }
}
