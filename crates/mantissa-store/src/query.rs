//! Typed queries.
//!
//! Conditions are built from the attribute constants that `#[derive(Item)]`
//! writes (`Post::views.gt(10)`), so a query on an attribute that does not
//! exist, or a comparison with a value of the wrong type, does not compile.
//! Results are typed items or typed columns, never rows.
//!
//! ```
//! # use mantissa_store::*;
//! #[derive(Item, Debug)]
//! #[item(name = "doc.q.post", version = 1)]
//! struct Post { #[item(index)] title: String, views: i64, draft: Option<bool> }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let site = Site::open(dir.path()).unwrap();
//! let store = site.user_store("alice").unwrap();
//! store.write_blocking(|tx| -> Result<()> {
//!     for (t, v) in [("b", 5), ("a", 50), ("c", 500)] {
//!         tx.insert(&Post { title: t.into(), views: v, draft: None })?;
//!     }
//!     Ok(())
//! }).unwrap();
//! let titles = store.read_blocking(|r| {
//!     r.query::<Post>()
//!         .filter(Post::views.gt(10).and(Post::draft.is_null()))
//!         .order_by(Post::title.desc())
//!         .column(Post::title)
//! }).unwrap();
//! assert_eq!(titles, ["c", "a"]);
//! ```

use std::marker::PhantomData;

use smallvec::SmallVec;

use crate::error::{Result, StoreError};
use crate::item::{Item, Stored, table_name};
use crate::sql::{self, Expr};
use crate::tx::Read;
use crate::value::{AttrKind, Attribute, Decimal, Ref, Value};

/// An attribute of item type `I` holding values of type `A`; written by
/// `#[derive(Item)]` as `I::field_name`.
pub struct Attr<I, A> {
    name: &'static str,
    _p: PhantomData<fn() -> (I, A)>,
}

impl<I, A> Clone for Attr<I, A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<I, A> Copy for Attr<I, A> {}

impl<I, A> std::fmt::Debug for Attr<I, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Attr({})", self.name)
    }
}

/// A condition on items of type `I`.
#[derive(Debug, Clone)]
pub struct Cond<I> {
    pub(crate) expr: Expr,
    _p: PhantomData<fn() -> I>,
}

impl<I> Cond<I> {
    pub(crate) fn from_expr(expr: Expr) -> Self {
        Cond::new(expr)
    }

    fn new(expr: Expr) -> Self {
        Cond {
            expr,
            _p: PhantomData,
        }
    }

    /// The condition every item meets.
    pub fn always() -> Self {
        Cond::new(Expr::True)
    }

    /// Both this and `other`.
    pub fn and(self, other: Cond<I>) -> Cond<I> {
        match self.expr {
            Expr::And(mut v) => {
                v.push(other.expr);
                Cond::new(Expr::And(v))
            }
            e => Cond::new(Expr::And(vec![e, other.expr])),
        }
    }

    /// Either this or `other`.
    pub fn or(self, other: Cond<I>) -> Cond<I> {
        match self.expr {
            Expr::Or(mut v) => {
                v.push(other.expr);
                Cond::new(Expr::Or(v))
            }
            e => Cond::new(Expr::Or(vec![e, other.expr])),
        }
    }

    /// Every one of `conds` (true when there are none).
    pub fn all(conds: impl IntoIterator<Item = Cond<I>>) -> Cond<I> {
        Cond::new(Expr::And(conds.into_iter().map(|c| c.expr).collect()))
    }

    /// Any one of `conds` (false when there are none).
    pub fn any(conds: impl IntoIterator<Item = Cond<I>>) -> Cond<I> {
        Cond::new(Expr::Or(conds.into_iter().map(|c| c.expr).collect()))
    }
}

impl<I> std::ops::Not for Cond<I> {
    type Output = Cond<I>;
    fn not(self) -> Cond<I> {
        Cond::new(Expr::Not(Box::new(self.expr)))
    }
}

/// A sort key on items of type `I`.
#[derive(Debug, Clone, Copy)]
pub struct Sort<I> {
    col: &'static str,
    kind: AttrKind,
    desc: bool,
    _p: PhantomData<fn() -> I>,
}

impl<I: Item, A: Attribute> Attr<I, A> {
    /// Used by the derive.
    #[doc(hidden)]
    pub const fn new(name: &'static str) -> Self {
        Attr {
            name,
            _p: PhantomData,
        }
    }

    /// The attribute's name.
    pub fn name(self) -> &'static str {
        self.name
    }

    fn cmp(self, op: &'static str, v: impl Into<A::Scalar>) -> Cond<I> {
        let v: A::Scalar = v.into();
        Cond::new(Expr::Cmp {
            col: self.name,
            kind: A::KIND,
            op,
            value: v.to_value().into_owned(),
        })
    }

    /// Equal to `v`.
    pub fn eq(self, v: impl Into<A::Scalar>) -> Cond<I> {
        self.cmp("=", v)
    }
    /// Not equal to `v` (items where the attribute is absent do not match).
    pub fn ne(self, v: impl Into<A::Scalar>) -> Cond<I> {
        self.cmp("<>", v)
    }
    /// Less than `v`.
    pub fn lt(self, v: impl Into<A::Scalar>) -> Cond<I> {
        self.cmp("<", v)
    }
    /// Less than or equal to `v`.
    pub fn le(self, v: impl Into<A::Scalar>) -> Cond<I> {
        self.cmp("<=", v)
    }
    /// Greater than `v`.
    pub fn gt(self, v: impl Into<A::Scalar>) -> Cond<I> {
        self.cmp(">", v)
    }
    /// Greater than or equal to `v`.
    pub fn ge(self, v: impl Into<A::Scalar>) -> Cond<I> {
        self.cmp(">=", v)
    }

    /// One of `values`.
    pub fn is_in<V: Into<A::Scalar>>(self, values: impl IntoIterator<Item = V>) -> Cond<I> {
        Cond::new(Expr::In {
            col: self.name,
            kind: A::KIND,
            values: values
                .into_iter()
                .map(|v| v.into().to_value().into_owned())
                .collect(),
        })
    }

    /// Ascending order on this attribute.
    pub fn asc(self) -> Sort<I> {
        Sort {
            col: self.name,
            kind: A::KIND,
            desc: false,
            _p: PhantomData,
        }
    }

    /// Descending order on this attribute.
    pub fn desc(self) -> Sort<I> {
        Sort {
            desc: true,
            ..self.asc()
        }
    }
}

impl<I: Item, A: Attribute<Scalar = String>> Attr<I, A> {
    /// SQL `LIKE`: `%` matches any run of characters, `_` one character,
    /// `\` escapes them; ASCII letters match either case.
    pub fn like(self, pattern: impl Into<String>) -> Cond<I> {
        Cond::new(Expr::Like {
            col: self.name,
            pattern: pattern.into(),
        })
    }

    /// Text that starts with `prefix`, exactly (case matters). Served by an
    /// index on the attribute.
    pub fn starts_with(self, prefix: impl Into<String>) -> Cond<I> {
        Cond::new(Expr::Prefix {
            col: self.name,
            prefix: prefix.into(),
        })
    }
}

impl<I: Item, T: Attribute> Attr<I, Option<T>> {
    /// The attribute is absent.
    pub fn is_null(self) -> Cond<I> {
        Cond::new(Expr::Null {
            col: self.name,
            is: true,
        })
    }
    /// The attribute is present.
    pub fn is_not_null(self) -> Cond<I> {
        Cond::new(Expr::Null {
            col: self.name,
            is: false,
        })
    }
}

impl<I: Item, U: Item, A: Attribute<Scalar = Ref<U>>> Attr<I, A> {
    /// Follows the reference: items whose referenced item meets `cond` (a
    /// join, written as a subquery).
    pub fn matches(self, cond: Cond<U>) -> Cond<I> {
        Cond::new(Expr::Follow {
            col: self.name,
            table: table_name(U::NAME),
            sub: Box::new(cond.expr),
        })
    }
}

/// A value that can be summed by [`Query::sum`].
pub trait Summable: Attribute + Default {
    /// Adds two values.
    fn add(self, other: Self) -> Self;
}
impl Summable for i64 {
    fn add(self, other: Self) -> Self {
        self.saturating_add(other)
    }
}
impl Summable for f64 {
    fn add(self, other: Self) -> Self {
        self + other
    }
}
impl Summable for Decimal {
    fn add(self, other: Self) -> Self {
        self.saturating_add(other)
    }
}

/// A query over items of type `T`; build it with [`Read::query`], end it with
/// one of the methods that return results.
#[must_use = "a query does nothing until one of all, first, count, column... runs it"]
pub struct Query<'a, T: Item> {
    read: Read<'a>,
    // Inline for the usual few: a query is built for every read.
    filter: SmallVec<[Expr; 2]>,
    order: SmallVec<[(&'static str, AttrKind, bool); 2]>,
    limit: Option<u64>,
    offset: u64,
    _p: PhantomData<fn() -> T>,
}

impl<'a, T: Item> Query<'a, T> {
    pub(crate) fn new(read: Read<'a>) -> Self {
        Query {
            read,
            filter: SmallVec::new(),
            order: SmallVec::new(),
            limit: None,
            offset: 0,
            _p: PhantomData,
        }
    }

    /// Keeps only items meeting `cond` (several filters all apply).
    pub fn filter(mut self, cond: Cond<T>) -> Self {
        self.filter.push(cond.expr);
        self
    }

    /// Sorts by `sort`, after any sorts already given. Ties are broken by id
    /// (in the direction of the last sort), so the order is always total.
    pub fn order_by(mut self, sort: Sort<T>) -> Self {
        self.order.push((sort.col, sort.kind, sort.desc));
        self
    }

    /// At most `n` results.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Skips the first `n` results.
    pub fn offset(mut self, n: u64) -> Self {
        self.offset = n;
        self
    }

    /// Keyset pagination: only items that sort after `last` (the last item
    /// of the previous page) in this query's order. Sort attributes should not
    /// be absent (NULL) for this to see every item.
    pub fn after(mut self, last: &Stored<T>) -> Self {
        let values = last.values();
        let values = values.as_ref();
        let mut alternatives = Vec::new();
        let mut equal_so_far: Vec<Expr> = Vec::new();
        let keys: Vec<(&'static str, AttrKind, bool, Value<'static>)> = self
            .order
            .iter()
            .map(|&(col, kind, desc)| {
                let i = T::ATTRS.iter().position(|a| a.name == col).unwrap_or(0);
                (col, kind, desc, values[i].clone().into_owned())
            })
            .chain(std::iter::once((
                "id",
                AttrKind::Integer,
                self.id_descending(),
                Value::Integer(last.id().id()),
            )))
            .collect();
        for (col, kind, desc, value) in keys {
            let mut step = equal_so_far.clone();
            step.push(Expr::Cmp {
                col,
                kind,
                op: if desc { "<" } else { ">" },
                value: value.clone(),
            });
            alternatives.push(Expr::And(step));
            equal_so_far.push(Expr::Cmp {
                col,
                kind,
                op: "=",
                value,
            });
        }
        self.filter.push(Expr::Or(alternatives));
        self
    }

    /// Ties are broken by id in the direction of the last sort key, so
    /// that an index on the sort attribute (which ends in the id) serves the
    /// whole order.
    fn id_descending(&self) -> bool {
        self.order.last().is_some_and(|&(_, _, desc)| desc)
    }

    fn where_clause(&self, sql: &mut String, params: &mut sql::Params) {
        if self.filter.is_empty() {
            return;
        }
        sql.push_str(" WHERE ");
        Expr::write_all(&self.filter, sql, params);
    }

    /// The order and the limits.
    fn tail(&self, with_order: bool, sql: &mut String) {
        if with_order {
            sql.push_str(" ORDER BY ");
            for &(col, kind, desc) in &self.order {
                sql::push_operand(sql, col, kind);
                sql.push_str(if desc { " DESC, " } else { ", " });
            }
            sql.push_str(if self.id_descending() {
                "id DESC"
            } else {
                "id"
            });
        }
        if self.limit.is_some() || self.offset > 0 {
            // Written into the text, not bound: with a bound limit SQLite
            // plans an ORDER BY … LIMIT without its top-N sort (measured:
            // two and a half times the work for `query_top_20`).
            use std::fmt::Write as _;
            let limit = self.limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64);
            let _ = write!(sql, " LIMIT {limit} OFFSET {}", self.offset);
        }
    }

    fn select(
        &self,
        columns: &str,
        with_order: bool,
        f: impl FnMut(&mut crate::backend::Row<'_>) -> Result<()>,
    ) -> Result<()> {
        let prefix = format!("SELECT {columns} FROM {}", sql::ident(&table_name(T::NAME)));
        self.select_with(&prefix, with_order, f)
    }

    /// Runs `prefix` (a `SELECT … FROM table`) with this query's conditions,
    /// order and limits.
    fn select_with(
        &self,
        prefix: &str,
        with_order: bool,
        mut f: impl FnMut(&mut crate::backend::Row<'_>) -> Result<()>,
    ) -> Result<()> {
        if !self.read.has_table::<T>()? {
            return Ok(());
        }
        let mut params = sql::Params::new();
        let mut sql = String::with_capacity(prefix.len() + 128);
        sql.push_str(prefix);
        self.where_clause(&mut sql, &mut params);
        self.tail(with_order, &mut sql);
        self.read.rows::<T>(&sql, &params, &mut f)
    }

    /// Every matching item.
    pub fn all(self) -> Result<Vec<Stored<T>>> {
        let mut out = Vec::with_capacity(self.limit.map_or(0, |l| l.min(64) as usize));
        let prefix = self.read.select_items::<T>()?;
        let path = &self.read.shared.path;
        self.select_with(&prefix, true, |row| {
            let id = match row.next() {
                Some(Value::Integer(i)) => i,
                _ => {
                    return Err(StoreError::Database {
                        path: path.clone(),
                        reason: format!("a row of {} without an id", T::NAME),
                    });
                }
            };
            out.push(Stored::new(Ref::from_id(id), T::from_values(row)?));
            Ok(())
        })?;
        Ok(out)
    }

    /// The first matching item, if any.
    pub fn first(self) -> Result<Option<Stored<T>>> {
        Ok(self.limit(1).all()?.into_iter().next())
    }

    /// The ids of the matching items.
    pub fn ids(self) -> Result<Vec<Ref<T>>> {
        let mut out = Vec::new();
        self.select("id", true, |row| {
            out.push(Ref::from_value(row.next().unwrap_or(Value::Null))?);
            Ok(())
        })?;
        Ok(out)
    }

    /// How many items match (limit and offset apply).
    pub fn count(self) -> Result<u64> {
        if self.limit.is_some() || self.offset > 0 {
            return Ok(self.ids()?.len() as u64);
        }
        let mut n = 0;
        self.select("COUNT(*)", false, |row| {
            n = i64::from_value(row.next().unwrap_or(Value::Null))? as u64;
            Ok(())
        })?;
        Ok(n)
    }

    /// One attribute of every matching item, in order.
    pub fn column<A: Attribute>(self, attr: Attr<T, A>) -> Result<Vec<A>> {
        let mut out = Vec::new();
        self.select(&sql::ident(attr.name), true, |row| {
            out.push(A::from_value(row.next().unwrap_or(Value::Null))?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Two attributes of every matching item, in order.
    pub fn columns2<A: Attribute, B: Attribute>(
        self,
        a: Attr<T, A>,
        b: Attr<T, B>,
    ) -> Result<Vec<(A, B)>> {
        let mut out = Vec::new();
        let cols = format!("{}, {}", sql::ident(a.name), sql::ident(b.name));
        self.select(&cols, true, |it| {
            out.push((
                A::from_value(it.next().unwrap_or(Value::Null))?,
                B::from_value(it.next().unwrap_or(Value::Null))?,
            ));
            Ok(())
        })?;
        Ok(out)
    }

    /// The distinct values of one attribute among matching items, sorted.
    pub fn distinct<A: Attribute>(self, attr: Attr<T, A>) -> Result<Vec<A>> {
        let mut out = Vec::new();
        let col = sql::ident(attr.name);
        if !self.read.has_table::<T>()? {
            return Ok(out);
        }
        let mut params = sql::Params::new();
        let mut sql = format!(
            "SELECT DISTINCT {col} FROM {}",
            sql::ident(&table_name(T::NAME))
        );
        self.where_clause(&mut sql, &mut params);
        sql.push_str(" ORDER BY ");
        sql::push_operand(&mut sql, attr.name, A::KIND);
        self.read.rows::<T>(&sql, &params, |row| {
            out.push(A::from_value(row.next().unwrap_or(Value::Null))?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The sum of one attribute over matching items (absent values count as
    /// nothing). Decimals are summed exactly.
    pub fn sum<A>(self, attr: Attr<T, A>) -> Result<A::Scalar>
    where
        A: Attribute,
        A::Scalar: Summable,
    {
        let mut total = A::Scalar::default();
        self.filter(Cond::new(Expr::Null {
            col: attr.name,
            is: false,
        }))
        .select(&sql::ident(attr.name), false, |row| {
            let v = A::Scalar::from_value(row.next().unwrap_or(Value::Null))?;
            total = std::mem::take(&mut total).add(v);
            Ok(())
        })?;
        Ok(total)
    }

    fn extreme<A: Attribute>(self, attr: Attr<T, A>, desc: bool) -> Result<Option<A::Scalar>> {
        let mut q = self.filter(Cond::new(Expr::Null {
            col: attr.name,
            is: false,
        }));
        q.order = smallvec::smallvec![(attr.name, A::KIND, desc)];
        q.limit = Some(1);
        let mut out = None;
        q.select(&sql::ident(attr.name), true, |row| {
            out = Some(A::Scalar::from_value(row.next().unwrap_or(Value::Null))?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The smallest value of one attribute among matching items.
    pub fn min<A: Attribute>(self, attr: Attr<T, A>) -> Result<Option<A::Scalar>> {
        self.extreme(attr, false)
    }

    /// The largest value of one attribute among matching items.
    pub fn max<A: Attribute>(self, attr: Attr<T, A>) -> Result<Option<A::Scalar>> {
        self.extreme(attr, true)
    }
}
