//! `#[derive(Item)]`: turns a plain Rust struct into a persistent item type of
//! `mantissa-store`.
//!
//! This crate owns only the code generation. Everything the generated code
//! refers to (the `Item` trait, `Attr`, the type registry) lives in
//! `mantissa-store`, which re-exports this macro; use it from there.
//!
//! What the derive writes, for `struct Post { title: String, .. }`:
//! - `impl Item for Post`: the stable type name, the schema version, one
//!   attribute description per field, and the conversions to and from rows;
//! - one associated constant per field, `Post::title`, of type
//!   `Attr<Post, String>`, which queries are written with — so a query on an
//!   attribute that does not exist does not compile;
//! - a registration in the store's type registry, so `Site::open` knows every
//!   item type linked into the binary without a hand-kept list.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{
    Data, DeriveInput, Expr, ExprLit, Fields, Ident, Lit, LitStr, Token, parse_macro_input,
    punctuated::Punctuated,
};

/// Derives `mantissa_store::Item`. See the `mantissa-store` crate documentation.
///
/// Struct attributes: `#[item(name = "blog.post", version = 2)]` (both required),
/// `#[item(index(a, b))]` and `#[item(unique(a, b))]` for compound indexes.
///
/// Field attributes: `#[item(index)]`, `#[item(unique)]`, `#[item(default = 0)]`
/// (a literal, used when an upgrade adds the attribute to existing items), and
/// `#[item(on_delete = "cascade" | "nullify" | "refuse")]` on references.
#[proc_macro_derive(Item, attributes(item))]
pub fn derive_item(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn store_crate() -> TokenStream2 {
    use proc_macro_crate::{FoundCrate, crate_name};
    match crate_name("mantissa-store") {
        Ok(FoundCrate::Itself) => quote!(::mantissa_store),
        Ok(FoundCrate::Name(name)) => {
            let ident = Ident::new(&name, Span::call_site());
            quote!(::#ident)
        }
        Err(_) => match crate_name("mantissa") {
            Ok(FoundCrate::Name(name)) => {
                let ident = Ident::new(&name, Span::call_site());
                quote!(::#ident::store)
            }
            _ => quote!(::mantissa::store),
        },
    }
}

struct FieldSpec {
    ident: Ident,
    ty: syn::Type,
    index: bool,
    unique: bool,
    default: Option<String>,
    on_delete: Option<(String, Span)>,
}

fn sql_literal(expr: &Expr) -> syn::Result<String> {
    let lit = match expr {
        Expr::Lit(ExprLit { lit, .. }) => lit.clone(),
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => {
            return Ok(format!("-{}", sql_literal(&u.expr)?));
        }
        other => {
            return Err(syn::Error::new_spanned(
                other,
                "default must be a literal (number, string or bool)",
            ));
        }
    };
    Ok(match lit {
        Lit::Int(i) => i.base10_digits().to_string(),
        Lit::Float(f) => f.base10_digits().to_string(),
        Lit::Bool(b) => if b.value { "1" } else { "0" }.to_string(),
        Lit::Str(s) => format!("'{}'", s.value().replace('\'', "''")),
        other => {
            return Err(syn::Error::new_spanned(
                other,
                "default must be a number, string or bool literal",
            ));
        }
    })
}

fn expand(input: DeriveInput) -> syn::Result<TokenStream2> {
    let krate = store_crate();
    let ident = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "an Item cannot be generic: its stored shape must be fixed",
        ));
    }

    let mut name: Option<LitStr> = None;
    let mut version: Option<u32> = None;
    let mut compound: Vec<(Vec<Ident>, bool)> = Vec::new();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("item")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("version") {
                let lit: syn::LitInt = meta.value()?.parse()?;
                let v: u32 = lit.base10_parse()?;
                if v == 0 {
                    return Err(meta.error("version starts at 1"));
                }
                version = Some(v);
            } else if meta.path.is_ident("index") || meta.path.is_ident("unique") {
                let unique = meta.path.is_ident("unique");
                let content;
                syn::parenthesized!(content in meta.input);
                let cols: Punctuated<Ident, Token![,]> =
                    content.parse_terminated(Ident::parse_any_ident, Token![,])?;
                compound.push((cols.into_iter().collect(), unique));
            } else {
                return Err(meta.error(
                    "unknown item attribute; expected name, version, index(..) or unique(..)",
                ));
            }
            Ok(())
        })?;
    }
    let name = name.ok_or_else(|| {
        syn::Error::new_spanned(
            ident,
            "missing #[item(name = \"...\")]: every item type needs a stable name",
        )
    })?;
    let name_value = name.value();
    if name_value.is_empty()
        || !name_value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(syn::Error::new_spanned(
            &name,
            "an item name uses only ASCII letters, digits, '_' and '.'",
        ));
    }
    let version = version.ok_or_else(|| {
        syn::Error::new_spanned(
            ident,
            "missing #[item(version = N)]: every item type declares its schema version",
        )
    })?;

    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(f) => &f.named,
            _ => {
                return Err(syn::Error::new_spanned(
                    ident,
                    "Item can only be derived for a struct with named fields",
                ));
            }
        },
        _ => {
            return Err(syn::Error::new_spanned(
                ident,
                "Item can only be derived for a struct",
            ));
        }
    };

    let mut specs = Vec::new();
    for f in fields {
        let fident = f.ident.clone().expect("named field");
        if fident == "id" {
            return Err(syn::Error::new_spanned(
                &fident,
                "`id` is reserved: every item already has one (Stored::id)",
            ));
        }
        let mut spec = FieldSpec {
            ident: fident,
            ty: f.ty.clone(),
            index: false,
            unique: false,
            default: None,
            on_delete: None,
        };
        for attr in f.attrs.iter().filter(|a| a.path().is_ident("item")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("index") {
                    spec.index = true;
                } else if meta.path.is_ident("unique") {
                    spec.unique = true;
                } else if meta.path.is_ident("default") {
                    let e: Expr = meta.value()?.parse()?;
                    spec.default = Some(sql_literal(&e)?);
                } else if meta.path.is_ident("on_delete") {
                    let s: LitStr = meta.value()?.parse()?;
                    let v = s.value();
                    if !matches!(v.as_str(), "cascade" | "nullify" | "refuse") {
                        return Err(syn::Error::new_spanned(
                            &s,
                            "on_delete is \"cascade\", \"nullify\" or \"refuse\"",
                        ));
                    }
                    spec.on_delete = Some((v, s.span()));
                } else {
                    return Err(meta.error(
                        "unknown attribute option; expected index, unique, default or on_delete",
                    ));
                }
                Ok(())
            })?;
        }
        specs.push(spec);
    }

    let field_names: Vec<String> = specs.iter().map(|s| s.ident.to_string()).collect();
    for (cols, _) in &compound {
        for c in cols {
            if !field_names.iter().any(|n| c == n) {
                return Err(syn::Error::new_spanned(
                    c,
                    format!("index names `{c}`, which is not a field of {ident}"),
                ));
            }
        }
    }

    let attr_defs = specs.iter().map(|s| {
        let fname = s.ident.to_string();
        let ty = &s.ty;
        let index = s.index;
        let unique = s.unique;
        let default = match &s.default {
            Some(d) => quote!(::core::option::Option::Some(#d)),
            None => quote!(::core::option::Option::None),
        };
        let on_delete = match s.on_delete.as_ref().map(|(v, _)| v.as_str()) {
            Some("cascade") => quote!(#krate::OnDelete::Cascade),
            Some("nullify") => quote!(#krate::OnDelete::Nullify),
            _ => quote!(#krate::OnDelete::Refuse),
        };
        quote! {
            #krate::AttrDef {
                name: #fname,
                kind: <#ty as #krate::Attribute>::KIND,
                nullable: <#ty as #krate::Attribute>::NULLABLE,
                references: <#ty as #krate::Attribute>::REFERENCES,
                index: #index,
                unique: #unique,
                default: #default,
                on_delete: #on_delete,
            }
        }
    });
    let index_defs = compound.iter().map(|(cols, unique)| {
        let names = cols.iter().map(|c| c.to_string());
        quote!(#krate::IndexDef { attrs: &[#(#names),*], unique: #unique })
    });
    let to_values = specs.iter().map(|s| {
        let f = &s.ident;
        quote!(#krate::Attribute::to_value(&self.#f))
    });
    let from_values = specs.iter().map(|s| {
        let f = &s.ident;
        let fname = f.to_string();
        quote! {
            #f: #krate::Attribute::from_value(
                __values.next().unwrap_or(#krate::Value::Null)
            ).map_err(|e| e.in_attribute(#name, #fname))?
        }
    });
    let consts = specs.iter().map(|s| {
        let f = &s.ident;
        let fname = f.to_string();
        let ty = &s.ty;
        let doc = format!("The `{fname}` attribute of `{ident}`, for queries.");
        quote! {
            #[doc = #doc]
            #[allow(non_upper_case_globals)]
            pub const #f: #krate::Attr<#ident, #ty> = #krate::Attr::new(#fname);
        }
    });
    let on_delete_checks = specs.iter().filter_map(|s| {
        let (v, span) = s.on_delete.as_ref()?;
        let ty = &s.ty;
        let check = if v == "nullify" {
            quote::quote_spanned!(*span=> #krate::__private::assert_nullable_ref::<#ty>())
        } else {
            quote::quote_spanned!(*span=> #krate::__private::assert_ref::<#ty>())
        };
        Some(quote! { const _: () = #check; })
    });

    Ok(quote! {
        impl #krate::Item for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            const ATTRS: &'static [#krate::AttrDef] = &[#(#attr_defs),*];
            const INDEXES: &'static [#krate::IndexDef] = &[#(#index_defs),*];

            fn values(&self) -> impl ::core::convert::AsRef<[#krate::Value<'_>]> {
                [#(#to_values),*]
            }

            fn __type_slot() -> &'static #krate::__private::TypeSlot {
                static SLOT: #krate::__private::TypeSlot = #krate::__private::TypeSlot::new();
                &SLOT
            }

            fn from_values(
                mut __values: impl ::core::iter::Iterator<Item = #krate::Value<'static>>,
            ) -> ::core::result::Result<Self, #krate::ValueError> {
                ::core::result::Result::Ok(Self { #(#from_values),* })
            }
        }

        impl #ident {
            #(#consts)*
        }

        const _: () = {
            #(#on_delete_checks)*
            #krate::__private::inventory::submit! {
                #krate::__private::ItemRegistration::of::<#ident>()
            }
        };
    })
}

trait ParseAnyIdent {
    fn parse_any_ident(input: syn::parse::ParseStream<'_>) -> syn::Result<Ident>;
}

impl ParseAnyIdent for Ident {
    fn parse_any_ident(input: syn::parse::ParseStream<'_>) -> syn::Result<Ident> {
        input.parse()
    }
}
