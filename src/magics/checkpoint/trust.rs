//! What a restore may believe about a checkpoint it did not write itself.
//!
//! A checkpoint directory can be edited by anyone who can write to it (a
//! shared drive, a bucket, a downloaded archive), so its manifest is data:
//! - origin comes from the file system — the checkpoint is the user's own only
//!   if its folder, its manifest and every file it lists belong to this user and
//!   are writable by no one else — never from fields inside the manifest;
//! - a saved type is pasted into generated code only if it parses as exactly
//!   one Rust type with no macro call and no block or other expression in it
//!   (variable names are checked by the manifest itself: identifiers only).

use ferrolab_checkpoint::Manifest;
use ra_ap_syntax::ast::{self, AstNode, HasModuleItem};
use ra_ap_syntax::{Edition, SourceFile, SyntaxKind};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether `ty` is one Rust type and nothing else.
pub fn is_single_type(ty: &str) -> bool {
    let ty = ty.trim();
    if ty.is_empty() || ty.contains(['\n', '\r']) {
        return false;
    }
    let source = format!("type __FerrolabRestored = {ty};");
    let parsed = SourceFile::parse(&source, Edition::Edition2024);
    if !parsed.errors().is_empty() {
        return false;
    }
    let file = parsed.tree();
    let mut items = file.items();
    let (Some(ast::Item::TypeAlias(alias)), None) = (items.next(), items.next()) else {
        return false;
    };
    let Some(parsed_ty) = alias.ty() else {
        return false;
    };
    if parsed_ty.syntax().text() != ty {
        return false;
    }
    parsed_ty.syntax().descendants().all(|node| {
        match node.kind() {
            SyntaxKind::MACRO_TYPE
            | SyntaxKind::MACRO_CALL
            | SyntaxKind::BLOCK_EXPR
            | SyntaxKind::CALL_EXPR
            | SyntaxKind::METHOD_CALL_EXPR
            | SyntaxKind::CLOSURE_EXPR => false,
            // `[T; N]` and const generics: a literal or a plain path only.
            SyntaxKind::CONST_ARG => node
                .children()
                .all(|child| matches!(child.kind(), SyntaxKind::LITERAL | SyntaxKind::PATH_EXPR)),
            _ => true,
        }
    }) && array_lengths_are_literal(&parsed_ty)
}

fn array_lengths_are_literal(ty: &ast::Type) -> bool {
    ty.syntax()
        .descendants()
        .filter_map(ast::ArrayType::cast)
        .all(|array| {
            array
                .const_arg()
                .and_then(|arg| arg.expr())
                .is_some_and(|expr| matches!(expr, ast::Expr::Literal(_) | ast::Expr::PathExpr(_)))
        })
}

/// `Ok` when `dir` is the user's own checkpoint; otherwise why not.
pub fn local_origin(dir: &Path, manifest: &Manifest) -> Result<(), String> {
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    let mut paths = vec![
        (dir.to_owned(), "its folder".to_owned()),
        (
            dir.join(ferrolab_checkpoint::manifest::MANIFEST),
            "its MANIFEST.json".to_owned(),
        ),
    ];
    for file in &manifest.files {
        let mut sub = dir.to_owned();
        let parts: Vec<&str> = file.path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            sub.push(part);
            paths.push((sub.clone(), format!("folder {}", sub.display())));
        }
        paths.push((dir.join(&file.path), file.path.clone()));
    }
    for (path, what) in paths {
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("{what} cannot be examined: {e}"))?;
        if meta.uid() != me {
            return Err(format!(
                "{what} belongs to {} (you are {})",
                user_name(meta.uid()),
                user_name(me)
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{what} can be changed by other users (mode {:o})",
                meta.mode() & 0o777
            ));
        }
    }
    Ok(())
}

/// `alice (uid 1000)`, or `uid 1000` when the name is unknown.
fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid).then(|| format!("{name} (uid {uid})"))
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_types_are_accepted() {
        for good in [
            "u64",
            "Vec<f32>",
            "HashMap<String, i64>",
            "std::collections::HashMap<String, Vec<(u8, f64)>>",
            "[f32; 3]",
            "(usize, [f32; 4])",
            "Option<Box<Model>>",
            "&'static str",
            "Box<dyn Fn() -> i32>",
        ] {
            assert!(is_single_type(good), "{good}");
        }
        for bad in [
            "u64 = { std::fs::write(\"/tmp/x\", \"\").unwrap(); 1 }; let mut count2: u64",
            "u64 = 1; static X: u8",
            "[u8; { std::process::abort(); 3 }]",
            "[u8; f()]",
            "m!()",
            "Vec<m!()>",
            "",
            "u64\nfn evil() {}",
            "u64 where",
        ] {
            assert!(!is_single_type(bad), "{bad}");
        }
    }
}
