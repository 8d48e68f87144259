//! Passes over a bound plan: each keeps the plan's answer and changes how it is computed.
//!
//! - [`join_conditions`]: comma-separated FROM items (cross joins under a WHERE, as SSB and
//!   BI tools write star joins) become inner joins on the WHERE's equalities between them: the
//!   item most equalities link (a star's fact table) first, then each item as soon as an
//!   equality links it to those joined; conditions that link nothing stay in the WHERE.
//!   Without it, every comma join would be a cross product.

use crate::plan::{Binary, Expr, ExprKind, Field, JoinKind, Plan};

/// Runs every pass.
pub fn optimize(plan: Plan) -> Plan {
    join_conditions(plan)
}

/// See the module docs.
pub fn join_conditions(plan: Plan) -> Plan {
    map_children(plan, &join_conditions, |plan| match plan {
        Plan::Filter { input, predicate } if is_cross(&input) => link(*input, predicate),
        other => other,
    })
}

/// Applies `pass` to each child of `plan`, then `here` to `plan` itself.
fn map_children(plan: Plan, pass: &dyn Fn(Plan) -> Plan, here: impl Fn(Plan) -> Plan) -> Plan {
    let plan = match plan {
        Plan::Filter { input, predicate } => Plan::Filter {
            input: Box::new(pass(*input)),
            predicate,
        },
        Plan::Project {
            input,
            exprs,
            fields,
        } => Plan::Project {
            input: Box::new(pass(*input)),
            exprs,
            fields,
        },
        Plan::Aggregate {
            input,
            groups,
            aggregates,
            fields,
        } => Plan::Aggregate {
            input: Box::new(pass(*input)),
            groups,
            aggregates,
            fields,
        },
        Plan::Join {
            left,
            right,
            kind,
            on,
            fields,
        } => Plan::Join {
            left: Box::new(pass(*left)),
            right: Box::new(pass(*right)),
            kind,
            on,
            fields,
        },
        Plan::Sort { input, keys } => Plan::Sort {
            input: Box::new(pass(*input)),
            keys,
        },
        Plan::Limit {
            input,
            offset,
            fetch,
        } => Plan::Limit {
            input: Box::new(pass(*input)),
            offset,
            fetch,
        },
        Plan::Distinct { input } => Plan::Distinct {
            input: Box::new(pass(*input)),
        },
        Plan::Window {
            input,
            windows,
            fields,
        } => Plan::Window {
            input: Box::new(pass(*input)),
            windows,
            fields,
        },
        Plan::Union { inputs, fields } => Plan::Union {
            inputs: inputs.into_iter().map(pass).collect(),
            fields,
        },
        leaf @ (Plan::Scan { .. } | Plan::Single) => leaf,
    };
    here(plan)
}

fn is_cross(plan: &Plan) -> bool {
    matches!(
        plan,
        Plan::Join {
            kind: JoinKind::Cross,
            ..
        }
    )
}

/// The items of a tree of cross joins, left to right.
fn items(plan: Plan, out: &mut Vec<Plan>) {
    match plan {
        Plan::Join {
            left,
            right,
            kind: JoinKind::Cross,
            on: None,
            ..
        } => {
            items(*left, out);
            items(*right, out);
        }
        other => out.push(other),
    }
}

fn conjuncts(e: Expr, out: &mut Vec<Expr>) {
    match e.kind {
        ExprKind::Binary(Binary::And, l, r) => {
            conjuncts(*l, out);
            conjuncts(*r, out);
        }
        kind => out.push(Expr { kind, ..e }),
    }
}

fn and(l: Expr, r: Expr) -> Expr {
    Expr {
        ty: crate::SqlType::Boolean,
        nullable: l.nullable || r.nullable,
        kind: ExprKind::Binary(Binary::And, Box::new(l), Box::new(r)),
    }
}

/// Rebuilds the cross joins under `predicate` as inner joins on its equalities.
fn link(cross: Plan, predicate: Expr) -> Plan {
    let original_fields: Vec<Field> = cross.fields().to_vec();
    let mut leaves = Vec::new();
    items(cross, &mut leaves);
    // Each item's columns in the original (FROM order) numbering.
    let mut starts = Vec::with_capacity(leaves.len());
    let mut at = 0;
    for leaf in &leaves {
        starts.push(at);
        at += leaf.fields().len();
    }
    let item_of = |column: usize| starts.iter().rposition(|&s| s <= column).unwrap_or(0);
    let mut parts = Vec::new();
    conjuncts(predicate, &mut parts);
    // Which items each conjunct reads.
    let reads: Vec<Vec<usize>> = parts
        .iter()
        .map(|p| {
            let mut items: Vec<usize> = p.columns().into_iter().map(item_of).collect();
            items.sort_unstable();
            items.dedup();
            items
        })
        .collect();
    let is_link = |p: &Expr, items: &[usize]| {
        items.len() == 2 && matches!(p.kind, ExprKind::Binary(Binary::Eq, _, _))
    };

    // Items in join order: the centre of the star first (the item most equalities link to
    // others: a fact table, which then probes each dimension's hash table), then each next
    // one linked to those joined, in FROM order.
    let links = |item: usize| {
        parts
            .iter()
            .zip(&reads)
            .filter(|(p, items)| is_link(p, items) && items.contains(&item))
            .count()
    };
    let centre = (0..leaves.len())
        .max_by_key(|&item| (links(item), std::cmp::Reverse(item)))
        .unwrap_or(0);
    let mut order = vec![centre];
    let mut remaining: Vec<usize> = (0..leaves.len()).filter(|&i| i != centre).collect();
    while !remaining.is_empty() {
        let linked = remaining.iter().position(|&candidate| {
            parts.iter().zip(&reads).any(|(p, items)| {
                is_link(p, items)
                    && items.contains(&candidate)
                    && items.iter().any(|i| order.contains(i))
            })
        });
        let next = remaining.remove(linked.unwrap_or(0));
        order.push(next);
    }

    // The new numbering: items in join order, each item's columns together.
    let mut new_start = vec![0usize; leaves.len()];
    let mut at = 0;
    for &item in &order {
        new_start[item] = at;
        at += leaves[item].fields().len();
    }
    let to_new = |column: usize| {
        let item = item_of(column);
        new_start[item] + (column - starts[item])
    };

    let mut leaves: Vec<Option<Plan>> = leaves.into_iter().map(Some).collect();
    let mut used = vec![false; parts.len()];
    let mut joined = leaves[order[0]].take().unwrap_or(Plan::Single);
    let mut joined_items = vec![order[0]];
    for &item in &order[1..] {
        let right = leaves[item].take().unwrap_or(Plan::Single);
        joined_items.push(item);
        let mut on: Option<Expr> = None;
        for (i, (p, items)) in parts.iter().zip(&reads).enumerate() {
            if !used[i] && is_link(p, items) && items.iter().all(|x| joined_items.contains(x)) {
                used[i] = true;
                let p = p.clone().remap(&to_new);
                on = Some(match on {
                    None => p,
                    Some(o) => and(o, p),
                });
            }
        }
        let mut fields = joined.fields().to_vec();
        fields.extend(right.fields().iter().cloned());
        joined = Plan::Join {
            left: Box::new(joined),
            right: Box::new(right),
            kind: if on.is_some() {
                JoinKind::Inner
            } else {
                JoinKind::Cross
            },
            on,
            fields,
        };
    }
    // What links nothing stays a filter, over the new numbering.
    let rest = parts
        .into_iter()
        .zip(used)
        .filter(|(_, used)| !used)
        .map(|(p, _)| p.remap(&to_new))
        .reduce(and);
    if let Some(predicate) = rest {
        joined = Plan::Filter {
            input: Box::new(joined),
            predicate,
        };
    }
    // The columns back in FROM order, as every expression above reads them.
    let joined_fields = joined.fields().to_vec();
    let exprs = (0..original_fields.len())
        .map(|c| Expr::column(to_new(c), &joined_fields[to_new(c)]))
        .collect();
    Plan::Project {
        input: Box::new(joined),
        exprs,
        fields: original_fields,
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::{Catalog, Column, Table};
    use crate::types::SqlType;

    fn catalog() -> Catalog {
        let mut c = Catalog::new("SSB");
        for (name, columns) in [
            ("DATES", vec!["D_DATEKEY", "D_YEAR"]),
            (
                "LINEORDER",
                vec!["LO_ORDERDATE", "LO_CUSTKEY", "LO_REVENUE"],
            ),
            ("CUSTOMER", vec!["C_CUSTKEY", "C_REGION"]),
        ] {
            c.add(Table {
                schema: "SSB".to_owned(),
                name: name.to_owned(),
                columns: columns
                    .into_iter()
                    .map(|n| Column::new(n, SqlType::Integer))
                    .collect(),
                rows: None,
            });
        }
        c
    }

    #[test]
    fn comma_joins_become_inner_joins_on_the_wheres_equalities() {
        // SSB's Q4 writes a dimension first: the fact table, linked to both dimensions, is
        // joined first all the same, then the dimensions in FROM order.
        let sql = "select d_year, sum(lo_revenue) from dates, customer, lineorder \
                   where lo_custkey = c_custkey and lo_orderdate = d_datekey and c_region = 1 \
                   group by d_year";
        let plan = super::optimize(crate::bind_query(sql, &catalog()).expect("plan"));
        let explained = plan.explain();
        // LINEORDER #0-2, DATES #3-4, CUSTOMER #5-6 in join order; FROM order restored above.
        let expected = "\
Project #0 AS D_YEAR, #1 AS EXPR$1
  Aggregate by [#1] computing [Sum(#6): BIGINT]
    Project #3 AS D_DATEKEY, #4 AS D_YEAR, #5 AS C_CUSTKEY, #6 AS C_REGION, #0 AS LO_ORDERDATE, #1 AS LO_CUSTKEY, #2 AS LO_REVENUE
      Filter (#6 = Integer(1))
        Join Inner on (#1 = #5)
          Join Inner on (#0 = #3)
            Scan SSB.LINEORDER
            Scan SSB.DATES
          Scan SSB.CUSTOMER
";
        assert_eq!(explained, expected);
        // Items that nothing links stay a cross join.
        let plan = super::optimize(
            crate::bind_query("select 1 from dates, customer where d_year = 1", &catalog())
                .expect("plan"),
        );
        assert!(plan.explain().contains("Join Cross"), "{}", plan.explain());
    }
}
