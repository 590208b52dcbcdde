//! The references an expression makes: `var.region`, `local.topics`,
//! `aws_kinesis_stream.raw.arn`, `count.index`... — the edges of the dependency graph.

use hcl::expr::{Expression, ObjectKey, TraversalOperator};
use hcl::template::{Directive, Element, Template};

/// A reference: the root name and the attribute names that follow it (up to the first index or
/// splat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The root, e.g. `var`, `local`, `aws_kinesis_stream`.
    pub root: String,
    /// The attributes read from it, e.g. `["raw", "arn"]`.
    pub attrs: Vec<String>,
}

impl Reference {
    /// The first attribute, e.g. the variable's or the resource's name.
    pub fn first(&self) -> Option<&str> {
        self.attrs.first().map(String::as_str)
    }
}

/// Every reference in `expr`, in the order written (names bound by `for` left out).
pub fn references(expr: &Expression) -> Vec<Reference> {
    let mut out = Vec::new();
    walk(expr, &mut Vec::new(), &mut out);
    out
}

fn walk(expr: &Expression, bound: &mut Vec<String>, out: &mut Vec<Reference>) {
    match expr {
        Expression::Null | Expression::Bool(_) | Expression::Number(_) | Expression::String(_) => {}
        Expression::Array(items) => items.iter().for_each(|e| walk(e, bound, out)),
        Expression::Object(object) => {
            for (key, value) in object {
                if let ObjectKey::Expression(key) = key {
                    walk(key, bound, out);
                }
                walk(value, bound, out);
            }
        }
        Expression::TemplateExpr(template) => {
            if let Ok(template) = Template::from_expr(template) {
                walk_template(&template, bound, out);
            }
        }
        Expression::Variable(variable) => push(variable.as_str(), Vec::new(), bound, out),
        Expression::Traversal(traversal) => {
            if let Expression::Variable(root) = &traversal.expr {
                let attrs = traversal
                    .operators
                    .iter()
                    .map_while(|op| match op {
                        TraversalOperator::GetAttr(name) => Some(name.to_string()),
                        _ => None,
                    })
                    .collect();
                push(root.as_str(), attrs, bound, out);
            } else {
                walk(&traversal.expr, bound, out);
            }
            for op in &traversal.operators {
                if let TraversalOperator::Index(index) = op {
                    walk(index, bound, out);
                }
            }
        }
        Expression::FuncCall(call) => call.args.iter().for_each(|e| walk(e, bound, out)),
        Expression::Parenthesis(inner) => walk(inner, bound, out),
        Expression::Conditional(c) => {
            walk(&c.cond_expr, bound, out);
            walk(&c.true_expr, bound, out);
            walk(&c.false_expr, bound, out);
        }
        Expression::Operation(op) => match op.as_ref() {
            hcl::expr::Operation::Unary(u) => walk(&u.expr, bound, out),
            hcl::expr::Operation::Binary(b) => {
                walk(&b.lhs_expr, bound, out);
                walk(&b.rhs_expr, bound, out);
            }
        },
        Expression::ForExpr(f) => {
            walk(&f.collection_expr, bound, out);
            let depth = bound.len();
            bound.push(f.value_var.to_string());
            if let Some(key) = &f.key_var {
                bound.push(key.to_string());
            }
            if let Some(key_expr) = &f.key_expr {
                walk(key_expr, bound, out);
            }
            walk(&f.value_expr, bound, out);
            if let Some(cond) = &f.cond_expr {
                walk(cond, bound, out);
            }
            bound.truncate(depth);
        }
        _ => {}
    }
}

fn walk_template(template: &Template, bound: &mut Vec<String>, out: &mut Vec<Reference>) {
    for element in template.elements() {
        match element {
            Element::Literal(_) => {}
            Element::Interpolation(i) => walk(&i.expr, bound, out),
            Element::Directive(d) => match d.as_ref() {
                Directive::If(d) => {
                    walk(&d.cond_expr, bound, out);
                    walk_template(&d.true_template, bound, out);
                    if let Some(f) = &d.false_template {
                        walk_template(f, bound, out);
                    }
                }
                Directive::For(d) => {
                    walk(&d.collection_expr, bound, out);
                    let depth = bound.len();
                    bound.push(d.value_var.to_string());
                    if let Some(key) = &d.key_var {
                        bound.push(key.to_string());
                    }
                    walk_template(&d.template, bound, out);
                    bound.truncate(depth);
                }
            },
        }
    }
}

fn push(root: &str, attrs: Vec<String>, bound: &[String], out: &mut Vec<Reference>) {
    if bound.iter().any(|b| b == root) {
        return;
    }
    out.push(Reference {
        root: root.to_string(),
        attrs,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> Vec<String> {
        let expr: Expression = hcl::edit::parser::parse_expr(text).unwrap().into();
        references(&expr)
            .into_iter()
            .map(|r| {
                std::iter::once(r.root)
                    .chain(r.attrs)
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect()
    }

    #[test]
    fn traversals_templates_and_calls_are_found() {
        assert_eq!(
            refs("aws_kinesis_stream.raw.arn"),
            ["aws_kinesis_stream.raw.arn"]
        );
        assert_eq!(
            refs("\"devices/${var.prefix}/${local.x[0]}\""),
            ["var.prefix", "local.x"]
        );
        assert_eq!(
            refs("jsonencode({a = aws_sns_topic.t.arn})"),
            ["aws_sns_topic.t.arn"]
        );
    }

    #[test]
    fn names_bound_by_for_are_not_references() {
        assert_eq!(refs("[for s in var.list : upper(s)]"), ["var.list"]);
        assert_eq!(refs("{for k, v in local.m : k => v.a}"), ["local.m"]);
    }
}
