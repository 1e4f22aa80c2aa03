//! The journal of Rust code that ran successfully in this session, and what a
//! restore into a fresh kernel replays from it: the `:dep` lines and the
//! items (`use`, fns, types, traits, impls, consts, modules, macros), never
//! the statements (the variables come from the checkpoint instead).
//!
//! Cells are split into statements the way evcxr does (rust-analyzer's
//! parser, the code wrapped in a function body).

use ra_ap_syntax::ast::{self, HasName};
use ra_ap_syntax::{AstNode, Edition, SourceFile};

/// One successful Rust segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub code: String,
    pub unix_time: f64,
}

/// What one item is, for deciding whether to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    /// fn, struct, enum, trait, type, const, static, mod, macro_rules.
    Named(String),
    /// An impl block, with the last path segment of its self type.
    Impl(String),
    /// `use` and `extern crate`, with the names they bring in.
    Use(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub kind: ItemKind,
    pub source: String,
}

/// What a cell defines, for replay.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Definitions {
    /// `:dep ...` lines, verbatim.
    pub deps: Vec<String>,
    /// Items, in order.
    pub items: Vec<Item>,
    /// Names brought in by `use` (the alias when renamed): imports, not
    /// types defined in the session.
    pub imports: Vec<String>,
}

impl Definitions {
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.items.iter().filter_map(|item| match &item.kind {
            ItemKind::Named(name) => Some(name.as_str()),
            _ => None,
        })
    }
}

/// The `:dep` lines and the items of one cell.
pub fn definitions(code: &str) -> Definitions {
    let mut found = Definitions::default();
    let mut rust = String::new();
    for line in code.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with(":dep ") {
            found.deps.push(trimmed.to_owned());
        }
        if trimmed.starts_with(':') {
            rust.push('\n');
        } else {
            rust.push_str(line);
            rust.push('\n');
        }
    }
    let prefix = "fn __ferrolab_cell() {\n";
    let parsed = SourceFile::parse(&format!("{prefix}{rust}\n}}"), Edition::Edition2024);
    let Some(body) = parsed
        .tree()
        .syntax()
        .children()
        .next()
        .and_then(ast::Fn::cast)
        .and_then(|f| f.body())
        .and_then(|b| b.stmt_list())
    else {
        return found;
    };
    for statement in body.statements() {
        let ast::Stmt::Item(item) = statement else {
            continue;
        };
        let name = match &item {
            ast::Item::Fn(i) => i.name(),
            ast::Item::Struct(i) => i.name(),
            ast::Item::Enum(i) => i.name(),
            ast::Item::Union(i) => i.name(),
            ast::Item::Trait(i) => i.name(),
            ast::Item::TypeAlias(i) => i.name(),
            ast::Item::Const(i) => i.name(),
            ast::Item::Static(i) => i.name(),
            ast::Item::Module(i) => i.name(),
            ast::Item::MacroRules(i) => i.name(),
            _ => None,
        };
        let mut imported = Vec::new();
        if let ast::Item::Use(import) = &item
            && let Some(tree) = import.use_tree()
        {
            imported_names(&tree, None, &mut imported);
            found.imports.extend(imported.iter().cloned());
        }
        let kind = match (&item, name) {
            (_, Some(name)) => ItemKind::Named(name.text().to_string()),
            (ast::Item::Impl(block), None) => ItemKind::Impl(impl_target(block)),
            (ast::Item::Use(_) | ast::Item::ExternCrate(_), None) => ItemKind::Use(imported),
            _ => continue,
        };
        found.items.push(Item {
            kind,
            source: item.syntax().text().to_string(),
        });
    }
    found
}

/// The names a `use` tree binds: `use a::b::{c, d as e, self}` → c, e, b.
fn imported_names(tree: &ast::UseTree, parent: Option<String>, out: &mut Vec<String>) {
    let last = tree
        .path()
        .and_then(|path| path.segment())
        .map(|segment| segment.syntax().text().to_string());
    if let Some(list) = tree.use_tree_list() {
        for child in list.use_trees() {
            imported_names(&child, last.clone().or(parent.clone()), out);
        }
        return;
    }
    if tree.star_token().is_some() {
        return;
    }
    let name = match tree.rename() {
        Some(rename) => rename.name().map(|n| n.text().to_string()),
        None => match last.as_deref() {
            Some("self") => parent,
            other => other.map(str::to_owned),
        },
    };
    if let Some(name) = name.filter(|n| n != "_") {
        out.push(name);
    }
}

/// `impl<T> Display for Wrapper<T>` → `Wrapper`.
fn impl_target(block: &ast::Impl) -> String {
    let text = block
        .self_ty()
        .map(|ty| ty.syntax().text().to_string())
        .unwrap_or_default();
    let head = text.split('<').next().unwrap_or("");
    head.rsplit("::").next().unwrap_or("").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_and_deps_are_kept_statements_dropped() {
        let code = r#":dep serde = { version = "1", features = ["derive"] }
use std::collections::HashMap;
#[derive(Debug, Clone)]
struct Point { x: f32 }
impl Point { fn norm(&self) -> f32 { self.x.abs() } }
let mut p = Point { x: -1.0 };
p.x += 1.0;
fn double(v: i32) -> i32 { v * 2 }
const N: usize = 3;
println!("{}", double(2));
p.norm()"#;
        let found = definitions(code);
        assert_eq!(
            found.deps,
            [r#":dep serde = { version = "1", features = ["derive"] }"#]
        );
        assert_eq!(found.names().collect::<Vec<_>>(), ["Point", "double", "N"]);
        assert_eq!(found.items.len(), 5);
        assert_eq!(found.items[0].kind, ItemKind::Use(vec!["HashMap".into()]));
        assert!(found.items[1].source.starts_with("#[derive(Debug, Clone)]"));
        assert_eq!(found.items[2].kind, ItemKind::Impl("Point".into()));
        assert!(found.items.iter().all(|i| !i.source.contains("let mut p")));
    }

    #[test]
    fn imports_are_told_apart_from_definitions() {
        let found = definitions(
            "use std::collections::HashMap;\nuse std::io::{self, Write as W, BufRead};\nuse std::fmt::*;\nstruct Mine;",
        );
        assert_eq!(found.imports, ["HashMap", "io", "W", "BufRead"]);
        assert_eq!(found.names().collect::<Vec<_>>(), ["Mine"]);
    }

    #[test]
    fn plain_statements_define_nothing() {
        assert_eq!(definitions("let x = 1;\nx + 1"), Definitions::default());
    }
}
