//! The module order `src/lib.rs` promises: each module uses only the modules listed above it,
//! so data flows one way and there is no import cycle. A module's own tests may use anything.

use std::collections::BTreeSet;
use std::path::Path;

/// The modules `src/lib.rs` declares, in order.
fn declared_modules(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|line| {
            let line = line.trim_start_matches("pub ").trim();
            let name = line.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.to_owned())
        })
        .collect()
}

/// The `crate::<module>` paths used in a module's code, comments left out.
fn used_modules(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (index, _) in line.match_indices("crate::") {
            let rest = &line[index + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    used
}

/// The code of every source file of module `name` (`src/<name>.rs` and anything under
/// `src/<name>/`, except its `tests.rs`), each file's test module left out.
fn sources_of(src: &Path, name: &str) -> String {
    let code = |text: String| {
        text.split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let own = std::fs::read_to_string(src.join(format!("{name}.rs"))).unwrap_or_default();
    let mut text = code(own);
    let dir = src.join(name);
    let mut stack = vec![dir];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|f| f != "tests.rs") {
                text.push_str(&code(std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    text
}

#[test]
fn each_module_uses_only_those_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = declared_modules(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(order.len() > 10, "{order:?}");
    let mut problems = Vec::new();
    for (position, module) in order.iter().enumerate() {
        let source = sources_of(&src, module);
        assert!(!source.is_empty(), "no source for {module}");
        for used in used_modules(&source) {
            let later = order[position + 1..].contains(&used);
            if later && used != *module {
                problems.push(format!("{module} uses {used}, declared after it"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
