//! Which of the member's properties a plugin function reads, found in its
//! compiled AST when the plugin loads, so that a call builds only those
//! into the `member` map it passes. Building every field, attribute and
//! aggregate as rhai values was over a quarter of `nudge ingest`'s time
//! with the example project, whose `crm.is_vip(member)` reads two.
//!
//! The answer is "these properties" only when every use of the parameter
//! is `param.name` (or a chain starting so: `param.event.amount`,
//! `param.tags[0]`); any other use (passed to a function, captured by a
//! closure, assigned, indexed by a string, a method such as `keys()`), or
//! a call that shares the function's scope (`helper!()`), means the whole
//! map. What this does not own: building the map
//! (`super::Plugins`).

use rhai::{AST, ASTNode, Expr};

/// The properties of a parameter that a function reads: `None` when it
/// may read any.
pub type Reads = Option<Vec<String>>;

/// Per parameter of `function` (of `arity`), what it reads of it.
pub fn of_function(ast: &AST, function: &str, arity: usize, params: &[&str]) -> Vec<Reads> {
    let mut only = ast.clone_functions_only();
    only.retain_functions(|_, _, name, n| name == function && n == arity);
    params.iter().map(|p| of_param(&only, p)).collect()
}

/// What the AST's functions read of variables named `param`.
fn of_param(ast: &AST, param: &str) -> Reads {
    let is_param = |e: &Expr| matches!(e, Expr::Variable(x, ..) if x.1 == param && x.2.is_empty());
    let (mut uses, mut properties) = (0usize, 0usize);
    let mut names: Vec<String> = Vec::new();
    let mut any = false;
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Expr(e)) if is_param(e) => uses += 1,
            // `helper!()` runs in this function's scope: it may read the
            // parameter where this walk does not look.
            Some(ASTNode::Expr(Expr::FnCall(f, ..))) if f.capture_parent_scope => any = true,
            Some(ASTNode::Expr(Expr::Dot(b, ..))) if is_param(&b.lhs) => {
                properties += 1;
                match lead(&b.rhs) {
                    Some(name) => names.push(name.to_string()),
                    None => any = true,
                }
            }
            _ => {}
        }
        true
    });
    if any || uses != properties {
        return None;
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// The property a chain after `param.` starts with.
fn lead(rhs: &Expr) -> Option<&str> {
    match rhs {
        Expr::Property(p, _) => Some(p.2.as_str()),
        Expr::Dot(b, ..) | Expr::Index(b, ..) => match &b.lhs {
            Expr::Property(p, _) => Some(p.2.as_str()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(script: &str) -> Reads {
        let ast = rhai::Engine::new().compile(script).expect("compiles");
        let f = ast
            .iter_functions()
            .find(|f| f.name == "f")
            .expect("a function f");
        let params: Vec<&str> = f.params.to_vec();
        of_function(&ast, "f", params.len(), &params).remove(0)
    }

    fn some(names: &[&str]) -> Reads {
        Some(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn properties_read_are_found_and_any_other_use_means_all() {
        let cases: &[(&str, Reads)] = &[
            (
                "fn f(member) { member.spend > 5 || member.tier == \"gold\" }",
                some(&["spend", "tier"]),
            ),
            (
                "fn f(m) { for t in m.tags { } m.event.amount + m.tags[0].len() }",
                some(&["event", "tags"]),
            ),
            ("fn f(m, n) { n + 1 }", some(&[])),
            // Another function's `m` is not this one's.
            (
                "fn g(m) { m.keys() } fn f(m) { m.points }",
                some(&["points"]),
            ),
            ("fn f(m) { m.keys() }", None),
            ("fn f(m) { m[\"spend\"] }", None),
            ("fn g(x) { x.spend } fn f(m) { g(m) }", None),
            ("fn f(m) { let c = |x| m.spend + x; c.call(1) }", None),
            ("fn f(m) { let k = m; k.spend }", None),
            ("fn f(m) { m.points = 5; m }", None),
            ("fn f(m) { m.points = 5; m.points }", some(&["points"])),
            // A helper run in the caller's scope reads `member` itself (a
            // helper's trial).
            (
                "fn tier() { member.tier } fn f(member) { member.spend + tier!() }",
                None,
            ),
        ];
        for (script, want) in cases {
            assert_eq!(&reads(script), want, "{script}");
        }
    }
}
