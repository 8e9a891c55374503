//! SQL text: table definitions for item types, and the compiled form of
//! typed queries.
//!
//! Identifiers come only from item definitions (checked by the derive) and
//! are always quoted; values are always bound parameters, never spliced into
//! the text. That is what "every query is parameterised" rests on.

use crate::item::{ItemType, OnDelete, table_name};

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

/// The statements that create an item type's table, indexes and clean-up
/// trigger, for a table called `table` (the type's own table, or the
/// temporary one an upgrade fills).
pub(crate) fn create_table(t: &ItemType, table: &str) -> String {
    let mut cols = vec!["id INTEGER PRIMARY KEY AUTOINCREMENT".to_string()];
    for a in t.attrs {
        let mut c = format!("{} {}", ident(a.name), a.kind.sql_type());
        if !a.nullable {
            c.push_str(" NOT NULL");
        }
        if let Some(d) = a.default {
            c.push_str(" DEFAULT ");
            c.push_str(d);
        }
        cols.push(c);
    }
    format!(
        "CREATE TABLE {} ({}) STRICT;\n",
        ident(table),
        cols.join(", ")
    )
}

/// Indexes and the delete trigger of a type's table (created after an
/// upgrade has filled it, which is faster than maintaining them meanwhile).
pub(crate) fn create_indexes(t: &ItemType) -> String {
    let table = t.table();
    let mut sql = String::new();
    for a in t.attrs {
        if a.index || a.unique || a.references.is_some() {
            sql.push_str(&format!(
                "CREATE {}INDEX {} ON {}({});\n",
                if a.unique { "UNIQUE " } else { "" },
                ident(&format!("{table}__{}", a.name)),
                ident(&table),
                ident(a.name)
            ));
        }
    }
    for ix in t.indexes {
        sql.push_str(&format!(
            "CREATE {}INDEX {} ON {}({});\n",
            if ix.unique { "UNIQUE " } else { "" },
            ident(&format!("{table}__{}", ix.attrs.join("__"))),
            ident(&table),
            ix.attrs
                .iter()
                .map(|a| ident(a))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Whatever removes an item (a delete, a cascade) also removes what the
    // store keeps about it elsewhere; its files go to a trash list that is
    // emptied after the transaction commits.
    let name = t.name.replace('\'', "''");
    sql.push_str(&format!(
        "CREATE TRIGGER {trigger} AFTER DELETE ON {table} BEGIN
            DELETE FROM _powerups WHERE (provider_type = '{name}' AND provider_id = old.id)
                OR (target_type = '{name}' AND target_id = old.id);
            DELETE FROM _schedule WHERE item_type = '{name}' AND item_id = old.id;
            INSERT INTO _files_trash(path) SELECT path FROM _files WHERE item_type = '{name}' AND item_id = old.id;
            DELETE FROM _files WHERE item_type = '{name}' AND item_id = old.id;
        END;\n",
        trigger = ident(&format!("{table}__deleted")),
        table = ident(&table),
    ));
    sql
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

/// One trigger that enforces a reference.
pub(crate) struct Trigger {
    pub(crate) name: String,
    /// The table it is defined on.
    pub(crate) on_table: String,
    pub(crate) sql: String,
}

/// The triggers that enforce `t`'s references: on `t`, that a reference
/// points to an existing item; on each referenced type's table, the
/// on-delete rule. Their messages name the item types and the attribute.
pub(crate) fn ref_triggers(t: &ItemType) -> Vec<Trigger> {
    let table = t.table();
    let mut out = Vec::new();
    for a in t.attrs {
        let Some(target) = a.references else { continue };
        let target_table = table_name(target);
        let col = ident(a.name);
        let missing = format!(
            "{}.{} refers to a {} that does not exist",
            t.name, a.name, target
        )
        .replace('\'', "''");
        for (suffix, event) in [
            ("ins", "INSERT".to_string()),
            ("upd", format!("UPDATE OF {col}")),
        ] {
            let name = format!("{table}__ref_{}_{suffix}", a.name);
            out.push(Trigger {
                sql: format!(
                    "CREATE TRIGGER {n} BEFORE {event} ON {tt} WHEN NEW.{col} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {tu} WHERE id = NEW.{col}) BEGIN SELECT RAISE(ABORT, '{missing}'); END;\n",
                    n = ident(&name),
                    tt = ident(&table),
                    tu = ident(&target_table),
                ),
                name,
                on_table: table.clone(),
            });
        }
        let name = format!("{table}__ref_{}_del", a.name);
        let sql = match a.on_delete {
            OnDelete::Cascade => format!(
                "CREATE TRIGGER {n} AFTER DELETE ON {tu} BEGIN DELETE FROM {tt} WHERE {col} = old.id; END;\n",
                n = ident(&name),
                tu = ident(&target_table),
                tt = ident(&table),
            ),
            OnDelete::Nullify => format!(
                "CREATE TRIGGER {n} AFTER DELETE ON {tu} BEGIN UPDATE {tt} SET {col} = NULL WHERE {col} = old.id; END;\n",
                n = ident(&name),
                tu = ident(&target_table),
                tt = ident(&table),
            ),
            OnDelete::Refuse => {
                let refused = format!(
                    "cannot delete this {target}: {}.{} still refers to it",
                    t.name, a.name
                )
                .replace('\'', "''");
                format!(
                    "CREATE TRIGGER {n} BEFORE DELETE ON {tu} WHEN EXISTS (SELECT 1 FROM {tt} WHERE {col} = old.id) BEGIN SELECT RAISE(ABORT, '{refused}'); END;\n",
                    n = ident(&name),
                    tu = ident(&target_table),
                    tt = ident(&table),
                )
            }
        };
        out.push(Trigger {
            name,
            on_table: target_table,
            sql,
        });
    }
    out
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
        sql.push_str(" AS REAL)");
    } else {
        push_ident(sql, col);
    }
}

fn placeholder(kind: AttrKind) -> &'static str {
    if kind == AttrKind::Decimal {
        "CAST(? AS REAL)"
    } else {
        "?"
    }
}

impl Expr {
    /// Writes `parts` joined by AND, without a list of its own.
    pub(crate) fn write_all(parts: &[Expr], sql: &mut String, params: &mut Params) {
        Expr::write_joined(parts, " AND ", "1", sql, params);
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
            Expr::True => sql.push('1'),
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
                    sql.push('0');
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
            Expr::And(parts) => Expr::write_joined(parts, " AND ", "1", sql, params),
            Expr::Or(parts) => Expr::write_joined(parts, " OR ", "0", sql, params),
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
