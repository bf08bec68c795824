//! A segment query as a user gives it (`nudge segment TEXT`, the `when`
//! or `segment` of `POST /v1/segments/...`) resolved against a loaded
//! project: a named segment, or a condition of the rule language checked
//! and compiled on its own. Scanning the members is `engine::segment`'s job.

use crate::base::diag::{Code, Diagnostic, SourceId, SourceMap, Span};
use crate::config::Schema;
use crate::lang::RuleSet;
use crate::lang::check::TExpr;
use crate::lang::check::{PluginSigs, check_query, query_plugin_hint};
use crate::lang::compile::{compile_query, plugin_call_in_segment};
use crate::lang::parse::{Fragment, FragmentKind, Offsets, parse_fragment};
use std::path::Path;

/// A resolved query: segment `index` of its own rule set (a condition), or
/// of the project's (a named segment).
pub struct Query {
    own: Option<RuleSet>,
    pub index: usize,
}

impl Query {
    /// The rule set to scan with: the query's own, or `project`.
    pub fn rules<'a>(&'a self, project: &'a RuleSet) -> &'a RuleSet {
        self.own.as_ref().unwrap_or(project)
    }
}

/// Resolves `text`, a segment name or a condition, against a loaded
/// project. Diagnostics point into a source named `segment`, added to
/// `sources`, that holds the text.
///
/// `fields` are the export's: those written as functions
/// (`expected_purchases(90d)`) are computed with the query, so a named
/// segment with them becomes its own query (`in segment "NAME"`).
pub fn segment_query(
    schema: &Schema,
    rules: &RuleSet,
    sources: &mut SourceMap,
    text: &str,
    fields: &[String],
) -> Result<Query, Vec<Diagnostic>> {
    let computed: Vec<&String> = fields.iter().filter(|f| f.contains('(')).collect();
    let name = text.trim().trim_matches('"');
    let named = rules.segments.iter().position(|s| s.name == name);
    if let Some(index) = named
        && computed.is_empty()
    {
        return Ok(Query { own: None, index });
    }
    let mut values = Vec::new();
    for f in computed {
        let source = sources.add(Path::new("field"), f.clone());
        match parse_fragment(FragmentKind::Expr, source, f, Offsets::Identity) {
            Ok(Fragment::Expr(e)) => values.push(e),
            Ok(_) => {}
            Err(ds) => return Err(ds),
        }
    }
    let text = match named {
        Some(i) => format!("in segment \"{}\"", rules.segments[i].name),
        None => text.to_string(),
    };
    let text = text.as_str();
    let source = sources.add(Path::new("segment"), text.to_string());
    let expr = match parse_fragment(FragmentKind::Expr, source, text, Offsets::Identity) {
        Ok(Fragment::Expr(e)) => e,
        Ok(_) => return Err(Vec::new()),
        Err(mut ds) => {
            if !rules.segments.is_empty() {
                let names: Vec<&str> = rules.segments.iter().map(|s| s.name.as_str()).collect();
                for d in &mut ds {
                    d.hint.get_or_insert_with(|| {
                        format!("a condition, or a named segment: {}", names.join(", "))
                    });
                }
            }
            return Err(ds);
        }
    };
    let checked: Vec<_> = rules.segments.iter().map(|s| s.checked.clone()).collect();
    match check_query(
        schema,
        &rules.layout,
        &checked,
        &PluginSigs::default(),
        source,
        &expr,
        &values,
    ) {
        Ok((_, cond)) if let Some(d) = plugin_in_segment(rules, source, text, &cond) => {
            Err(vec![d])
        }
        Ok((layout, cond)) => Ok(Query {
            own: Some(compile_query(layout, cond, schema.events.len())),
            index: 0,
        }),
        Err(ds) if ds.is_empty() => Err(vec![Diagnostic::new(
            Code::TypeMismatch,
            source,
            Span::new(0, text.len()),
            "this is not a condition",
        )]),
        Err(ds) => Err(ds),
    }
}

/// E228 for a query that uses a named segment calling a plugin function
/// (the query's own calls are refused by the check): named by the segment
/// use and the project's name of the plugin, which the query's check does
/// not know.
fn plugin_in_segment(
    rules: &RuleSet,
    source: SourceId,
    text: &str,
    cond: &TExpr,
) -> Option<Diagnostic> {
    let (span, plugin, function) = plugin_call_in_segment(cond)?;
    let f = rules.plugin_function(plugin, function);
    let used = text.get(span.start..span.end).unwrap_or("a segment");
    Some(
        Diagnostic::new(
            Code::QueryPlugin,
            source,
            span,
            format!("{used} calls the plugin function `{f}`, and a segment query cannot call plugin functions"),
        )
        .label("segments are counted and exported without plugins")
        .hint(query_plugin_hint(&f)),
    )
}
