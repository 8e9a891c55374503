//! SQL text: table definitions for item types, and the compiled form of
//! typed queries.
//!
//! Identifiers come only from item definitions (checked by the derive) and
//! are always quoted; values are always bound parameters, never spliced into
//! the text. That is what "every query is parameterised" rests on.

use crate::item::ItemType;

use crate::value::{AttrKind, Value};

/// Quotes an identifier.
pub(crate) fn ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    push_ident(&mut s, name);
    s
}

/// "item_blog.post.title" (from a SQLite message) → "blog.post.title".
pub(crate) fn describe_column(col: &str) -> String {
    col.strip_prefix("item_").unwrap_or(col).to_string()
}

/// One index of an item type's table, as every backend makes it: its
/// name, whether it is unique, and its columns (quoted, comma-separated).
pub(crate) struct Index {
    pub(crate) name: String,
    pub(crate) unique: bool,
    pub(crate) columns: String,
}

/// The indexes of `t`'s table: one for each attribute that is indexed,
/// unique or a reference, and each compound index.
pub(crate) fn indexes(t: &ItemType) -> Vec<Index> {
    let table = t.table();
    let single = t
        .attrs
        .iter()
        .filter(|a| a.index || a.unique || a.references.is_some())
        .map(|a| Index {
            name: ident(&format!("{table}__{}", a.name)),
            unique: a.unique,
            columns: ident(a.name),
        });
    let compound = t.indexes.iter().map(|ix| Index {
        name: ident(&format!("{table}__{}", ix.attrs.join("__"))),
        unique: ix.unique,
        columns: ix
            .attrs
            .iter()
            .map(|a| ident(a))
            .collect::<Vec<_>>()
            .join(", "),
    });
    single.chain(compound).collect()
}

/// `INSERT INTO table (a, b) VALUES (?, ?)`.
pub(crate) fn insert(t: &ItemType, table: &str, with_id: bool) -> String {
    let mut cols: Vec<String> = t.attrs.iter().map(|a| ident(a.name)).collect();
    if with_id {
        cols.insert(0, "id".into());
    }
    let marks = vec!["?"; cols.len()].join(", ");
    format!(
        "INSERT INTO {} ({}) VALUES ({marks})",
        ident(table),
        cols.join(", ")
    )
}

/// `INSERT INTO table (id, a, b) VALUES (?, ?, ?)`, replacing the row
/// that has the id already, if any (SQLite and PostgreSQL both read
/// `ON CONFLICT … DO UPDATE … excluded`).
pub(crate) fn upsert_by_id(t: &ItemType, table: &str) -> String {
    let sets: Vec<String> = t
        .attrs
        .iter()
        .map(|a| format!("{c} = excluded.{c}", c = ident(a.name)))
        .collect();
    let on_conflict = if sets.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", sets.join(", "))
    };
    format!("{} ON CONFLICT (id) {on_conflict}", insert(t, table, true))
}

/// `UPDATE table SET a = ?, b = ? WHERE id = ?`.
pub(crate) fn update(t: &ItemType) -> String {
    let sets: Vec<String> = t
        .attrs
        .iter()
        .map(|a| format!("{} = ?", ident(a.name)))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE id = ?",
        ident(&t.table()),
        sets.join(", ")
    )
}

/// A condition, compiled from the typed builders in [`crate::query`].
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    True,
    Cmp {
        col: &'static str,
        kind: AttrKind,
        op: &'static str,
        value: Value<'static>,
    },
    In {
        col: &'static str,
        kind: AttrKind,
        values: Vec<Value<'static>>,
    },
    Like {
        col: &'static str,
        pattern: String,
    },
    Prefix {
        col: &'static str,
        prefix: String,
    },
    Null {
        col: &'static str,
        is: bool,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Follow {
        col: &'static str,
        table: String,
        sub: Box<Expr>,
    },
}

/// A statement's bound values: inline for the usual few.
pub(crate) type Params = smallvec::SmallVec<[Value<'static>; 4]>;

/// Appends a quoted identifier to `sql` (as [`ident`], without a string of
/// its own: queries are written on every read).
pub(crate) fn push_ident(sql: &mut String, name: &str) {
    sql.push('"');
    for c in name.chars() {
        if c == '"' {
            sql.push('"');
        }
        sql.push(c);
    }
    sql.push('"');
}

/// Appends a column as compared: decimals compare by value, not as text.
pub(crate) fn push_operand(sql: &mut String, col: &str, kind: AttrKind) {
    if kind == AttrKind::Decimal {
        sql.push_str("CAST(");
        push_ident(sql, col);
        sql.push_str(" AS DOUBLE PRECISION)");
    } else {
        push_ident(sql, col);
    }
}

fn placeholder(kind: AttrKind) -> &'static str {
    if kind == AttrKind::Decimal {
        "CAST(CAST(? AS TEXT) AS DOUBLE PRECISION)"
    } else {
        "?"
    }
}

impl Expr {
    /// Writes `parts` joined by AND, without a list of its own.
    pub(crate) fn write_all(parts: &[Expr], sql: &mut String, params: &mut Params) {
        Expr::write_joined(parts, " AND ", "TRUE", sql, params);
    }

    fn write_joined(
        parts: &[Expr],
        joiner: &str,
        empty: &str,
        sql: &mut String,
        params: &mut Params,
    ) {
        if parts.is_empty() {
            sql.push_str(empty);
            return;
        }
        sql.push('(');
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                sql.push_str(joiner);
            }
            p.write(sql, params);
        }
        sql.push(')');
    }

    pub(crate) fn write(&self, sql: &mut String, params: &mut Params) {
        match self {
            // TRUE and FALSE, not 1 and 0: PostgreSQL takes no integer as a
            // condition (SQLite reads both).
            Expr::True => sql.push_str("TRUE"),
            Expr::Cmp {
                col,
                kind,
                op,
                value,
            } => {
                push_operand(sql, col, *kind);
                sql.push(' ');
                sql.push_str(op);
                sql.push(' ');
                sql.push_str(placeholder(*kind));
                params.push(value.clone());
            }
            Expr::In { col, kind, values } => {
                if values.is_empty() {
                    sql.push_str("FALSE");
                    return;
                }
                push_operand(sql, col, *kind);
                sql.push_str(" IN (");
                for i in 0..values.len() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(placeholder(*kind));
                }
                sql.push(')');
                params.extend(values.iter().cloned());
            }
            Expr::Like { col, pattern } => {
                push_ident(sql, col);
                sql.push_str(" LIKE ? ESCAPE '\\'");
                params.push(Value::Text(pattern.clone().into()));
            }
            Expr::Prefix { col, prefix } => {
                // A range, so that an index on the column serves it.
                sql.push('(');
                push_ident(sql, col);
                sql.push_str(" >= ? AND ");
                push_ident(sql, col);
                sql.push_str(" < ?)");
                params.push(Value::Text(prefix.clone().into()));
                params.push(Value::Text(format!("{prefix}\u{10FFFF}").into()));
            }
            Expr::Null { col, is } => {
                push_ident(sql, col);
                sql.push_str(if *is { " IS NULL" } else { " IS NOT NULL" });
            }
            Expr::And(parts) => Expr::write_joined(parts, " AND ", "TRUE", sql, params),
            Expr::Or(parts) => Expr::write_joined(parts, " OR ", "FALSE", sql, params),
            Expr::Not(inner) => {
                sql.push_str("NOT (");
                inner.write(sql, params);
                sql.push(')');
            }
            Expr::Follow { col, table, sub } => {
                push_ident(sql, col);
                sql.push_str(" IN (SELECT id FROM ");
                push_ident(sql, table);
                sql.push_str(" WHERE ");
                sub.write(sql, params);
                sql.push(')');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_never_spliced() {
        let e = Expr::And(vec![
            Expr::Cmp {
                col: "title",
                kind: AttrKind::Text,
                op: "=",
                value: Value::Text("x'); DROP TABLE t; --".into()),
            },
            Expr::Not(Box::new(Expr::Null {
                col: "body",
                is: true,
            })),
        ]);
        let mut sql = String::new();
        let mut params = Params::new();
        e.write(&mut sql, &mut params);
        assert_eq!(sql, "(\"title\" = ? AND NOT (\"body\" IS NULL))");
        assert_eq!(params.len(), 1);
    }
}
