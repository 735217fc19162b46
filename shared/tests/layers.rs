//! The module layering documented in `src/lib.rs` holds: every `crate::`
//! path in a module's (non-test) source names a module of a lower layer, and
//! no two submodules of one module import each other (they share only what
//! their parent holds).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module name → layer number, from the numbered list under "## Layers".
fn layers() -> BTreeMap<String, usize> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut layers = BTreeMap::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("//! ")) {
        let Some((number, names)) = line.split_once(". ") else { continue };
        let Ok(number) = number.parse::<usize>() else { continue };
        for name in names.split(',').map(|n| n.trim().trim_matches('`')) {
            assert!(layers.insert(name.to_owned(), number).is_none(), "{name} is listed twice");
        }
    }
    assert!(layers.len() > 5, "the layer list in lib.rs was not found");
    layers
}

/// The source of a file without its test module and its comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let body = text.split("\n#[cfg(test)]\n").next().unwrap();
    body.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

/// The first path segment of every `prefix` path in `code`, braced groups
/// (`prefix{a::x, b}`) included.
fn heads(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let rest = &code[at + prefix.len()..];
        let items: Vec<&str> = match rest.strip_prefix('{') {
            Some(inner) => inner[..inner.find('}').expect("closed group")].split(',').collect(),
            None => vec![rest],
        };
        for item in items {
            let head: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !head.is_empty() && head != "self" {
                found.insert(head);
            }
        }
    }
    found
}

/// Every source file with the top-level module it belongs to.
fn files() -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            for sub in std::fs::read_dir(&path).unwrap() {
                files.push((name.clone(), sub.unwrap().path()));
            }
        } else if name != "lib" {
            files.push((name, path));
        }
    }
    files
}

#[test]
fn every_import_points_to_a_lower_layer() {
    let layers = layers();
    let mut broken = Vec::new();
    let mut seen = BTreeSet::new();
    for (module, path) in files() {
        let own = *layers.get(&module).unwrap_or_else(|| panic!("module {module} is not in lib.rs's layer list"));
        seen.insert(module.clone());
        for dep in heads(&code(&path), "crate::") {
            let theirs =
                *layers.get(&dep).unwrap_or_else(|| panic!("{}: crate::{dep} is not a listed module", path.display()));
            if dep != module && theirs >= own {
                broken.push(format!("{} (layer {own}) imports {dep} (layer {theirs})", path.display()));
            }
        }
    }
    assert!(broken.is_empty(), "imports against the layering:\n{}", broken.join("\n"));
    let listed: BTreeSet<String> = layers.keys().cloned().collect();
    assert_eq!(seen, listed, "lib.rs lists exactly the modules there are");
}

#[test]
fn submodules_do_not_import_each_other() {
    let files = files();
    for (module, path) in &files {
        if path.file_name().unwrap() == "mod.rs" || path.parent().unwrap() == src() {
            continue;
        }
        let siblings: BTreeSet<String> = files
            .iter()
            .filter(|(m, p)| m == module && p != path)
            .map(|(_, p)| p.file_stem().unwrap().to_str().unwrap().to_owned())
            .filter(|s| s != "mod")
            .collect();
        let uses = heads(&code(path), "super::");
        let crossing: Vec<_> = uses.intersection(&siblings).collect();
        let via_crate: Vec<_> =
            siblings.iter().filter(|s| code(path).contains(&format!("crate::{module}::{s}"))).collect();
        assert!(
            crossing.is_empty() && via_crate.is_empty(),
            "{} imports its siblings {crossing:?} {via_crate:?}: move what they share into {module}/mod.rs",
            path.display()
        );
    }
}

#[test]
fn the_checker_sees_braced_and_plain_paths() {
    let code = "use crate::{alloc::Kind, money};\nuse crate::keys;\nlet x = crate::json::to_vec(&y);";
    let found: Vec<String> = heads(code, "crate::").into_iter().collect();
    assert_eq!(found, ["alloc", "json", "keys", "money"]);
}
