//! CPU-only lint of every embedded PTX module (runs in all builds, no GPU, no ptxas).
//!
//! For each module in `registry::ALL`: the header (`.version`, `.target`, `.address_size 64`), the
//! documentation block on top, every `.visible .entry NAME(` with its `.param` count, checked
//! against the registry (whose counts are what each `cuda.rs` pushes, and what `launch::Launch`
//! checks at run time). Also: every `.ptx` file under `src/` is registered.

use brainstacks_kernels::registry::{ALL, ModuleId};

/// Newest PTX ISA we emit: ptxas 12.9 (the check script) and drivers >= CUDA 12.0 accept 8.0.
const MAX_PTX_VERSION: (u32, u32) = (8, 0);
/// `.target`s allowed: the portable baseline, and Hopper-only variants.
const TARGETS: [&str; 2] = ["sm_80", "sm_90a"];

/// The text with `//` and `/* */` comments removed.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    loop {
        let line = rest.find("//");
        let block = rest.find("/*");
        match (line, block) {
            (None, None) => {
                out.push_str(rest);
                return out;
            }
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = match rest[l..].find('\n') {
                    Some(e) => &rest[l + e..],
                    None => "",
                };
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = match rest[b + 2..].find("*/") {
                    Some(e) => &rest[b + 2 + e + 2..],
                    None => "",
                };
                out.push(' ');
            }
            _ => unreachable!(),
        }
    }
}

/// `(directive argument)` of the first line starting with `directive`.
fn directive<'a>(code: &'a str, name: &str) -> Option<&'a str> {
    code.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(name).map(|r| r.trim()))
}

/// Every `.visible .entry NAME( ... )` with its number of `.param`s.
fn entries(code: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(pos) = rest.find(".entry") {
        let before = rest[..pos].trim_end();
        let after = &rest[pos + ".entry".len()..];
        rest = after;
        assert!(
            before.ends_with(".visible"),
            "an .entry that is not .visible"
        );
        let open = after.find('(').expect(".entry without a parameter list");
        let name = after[..open].trim().to_string();
        let close = after[open..].find(')').expect("unclosed parameter list") + open;
        let params = after[open + 1..close].matches(".param").count();
        out.push((name, params));
    }
    out
}

#[test]
fn registry_matches_every_ptx_module() {
    for (i, m) in ALL.iter().enumerate() {
        assert_eq!(m.id.index(), i, "{}: ALL is not in ModuleId order", m.name);
        let code = strip_comments(m.ptx);

        let version =
            directive(&code, ".version").unwrap_or_else(|| panic!("{}: no .version", m.name));
        let (maj, min) = version
            .split_once('.')
            .unwrap_or_else(|| panic!("{}: .version {version}", m.name));
        let v: (u32, u32) = (maj.parse().unwrap(), min.parse().unwrap());
        assert!(
            v <= MAX_PTX_VERSION,
            "{}: .version {version} newer than {MAX_PTX_VERSION:?}",
            m.name
        );

        let target =
            directive(&code, ".target").unwrap_or_else(|| panic!("{}: no .target", m.name));
        assert!(
            TARGETS.contains(&target),
            "{}: .target {target} not in {TARGETS:?}",
            m.name
        );
        assert_eq!(
            directive(&code, ".address_size"),
            Some("64"),
            "{}: .address_size",
            m.name
        );

        let found = entries(&code);
        let mut want: Vec<(String, usize)> = m
            .entries
            .iter()
            .map(|e| (e.name.to_string(), e.params))
            .collect();
        let mut got = found.clone();
        want.sort();
        got.sort();
        assert_eq!(
            got, want,
            "{}: PTX entries (name, params) differ from the registry",
            m.name
        );

        // The documentation block DESIGN.md requires, before the first directive.
        let head: String = m
            .ptx
            .lines()
            .take_while(|l| !l.trim_start().starts_with(".version"))
            .collect();
        for word in ["Math", "Launch geometry", "mirrors"] {
            assert!(
                head.contains(word),
                "{}: top comment block lacks '{word}'",
                m.name
            );
        }
        for e in m.entries {
            assert!(
                head.contains(e.name),
                "{}: top comment block does not document {}",
                m.name,
                e.name
            );
        }
    }
}

#[test]
fn every_ptx_file_is_registered() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "ptx") {
                out.push(p);
            }
        }
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    if !src.is_dir() {
        // A bundled test binary on the GPU machine, where the sources are not present.
        println!(
            "skipped: {} not present (sources are not here)",
            src.display()
        );
        return;
    }
    let mut files = Vec::new();
    walk(&src, &mut files);
    assert_eq!(
        files.len(),
        ModuleId::COUNT,
        "PTX files on disk vs registry: {files:?}"
    );
    for f in files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let m = ALL
            .iter()
            .find(|m| m.name == rel)
            .unwrap_or_else(|| panic!("{rel} is not in the registry"));
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            m.ptx,
            "{rel}: embedded text differs"
        );
    }
}

#[test]
fn parser_sees_params_and_skips_comments() {
    let code = strip_comments(
        "// .visible .entry fake(\n.visible .entry k( /* .param */\n .param .u64 a, // .param\n .param .f32 b\n)\n{ ret; }",
    );
    assert_eq!(entries(&code), vec![("k".to_string(), 2)]);
}
