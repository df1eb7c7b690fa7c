//! Reading `#[job(...)]`: the type's options and the fields marked `unique_key` or `group`.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::{
    Attribute, Data, DeriveInput, Fields, Ident, LitInt, LitStr, Member, Path, Type,
    meta::ParseNestedMeta, spanned::Spanned,
};

/// The options of the type, as written.
pub(crate) struct JobAttrs {
    pub name: Option<LitStr>,
    pub output: Option<Type>,
    pub priority: Option<Ident>,
    pub retries: Option<LitInt>,
    pub timeout_ms: Option<TokenStream>,
    pub delay_ms: Option<TokenStream>,
    pub cost: Option<LitInt>,
    pub on_failure: Option<Ident>,
    pub stages: Option<Vec<(LitStr, LitInt)>>,
    pub schema: bool,
    pub krate: Option<Path>,
    pub unique_key: Option<Member>,
    pub group: Option<Member>,
}

const TYPE_OPTIONS: &str = "name, output, priority, retries, timeout_secs, timeout_ms, \
                            delay_secs, delay_ms, cost, on_failure, stages, schema, crate";

const PRIORITIES: [(&str, &str); 3] = [("high", "High"), ("normal", "Normal"), ("low", "Low")];

const POLICIES: [(&str, &str); 3] = [
    ("fail_parent", "FailParent"),
    ("ignore", "Ignore"),
    ("continue", "Continue"),
];

impl JobAttrs {
    pub(crate) fn read(input: &DeriveInput) -> syn::Result<Self> {
        let mut attrs = Self {
            name: None,
            output: None,
            priority: None,
            retries: None,
            timeout_ms: None,
            delay_ms: None,
            cost: None,
            on_failure: None,
            stages: None,
            schema: false,
            krate: None,
            unique_key: None,
            group: None,
        };
        for attr in job_attrs(&input.attrs) {
            attr.parse_nested_meta(|meta| attrs.type_option(&meta))?;
        }
        attrs.read_fields(&input.data)?;
        Ok(attrs)
    }

    fn type_option(&mut self, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let Some(option) = meta.path.get_ident().map(Ident::to_string) else {
            return Err(meta.error(format!("unknown option; expected one of {TYPE_OPTIONS}")));
        };
        match option.as_str() {
            "name" => set(meta, &mut self.name, meta.value()?.parse()?),
            "output" => set(meta, &mut self.output, meta.value()?.parse()?),
            "priority" => {
                let lit: LitStr = meta.value()?.parse()?;
                let variant = one_of(&lit, &PRIORITIES, "priority")?;
                set(meta, &mut self.priority, variant)
            }
            "on_failure" => {
                let lit: LitStr = meta.value()?.parse()?;
                let variant = one_of(&lit, &POLICIES, "on_failure")?;
                set(meta, &mut self.on_failure, variant)
            }
            "retries" => set(meta, &mut self.retries, int::<u32>(meta)?),
            "cost" => set(meta, &mut self.cost, int::<u32>(meta)?),
            "timeout_secs" | "timeout_ms" | "delay_secs" | "delay_ms" => {
                let written = int::<u64>(meta)?;
                let lit = LitInt::new(
                    &format!("{}u64", written.base10_parse::<u64>()?),
                    written.span(),
                );
                let ms = if option.ends_with("_secs") {
                    quote!(#lit.saturating_mul(1000))
                } else {
                    lit.to_token_stream()
                };
                let slot = if option.starts_with("timeout") {
                    &mut self.timeout_ms
                } else {
                    &mut self.delay_ms
                };
                if slot.is_some() {
                    return Err(meta.error(format!(
                        "the {} is set twice",
                        option.split('_').next().unwrap_or_default()
                    )));
                }
                *slot = Some(ms);
                Ok(())
            }
            "stages" => {
                let mut stages: Vec<(LitStr, LitInt)> = Vec::new();
                meta.parse_nested_meta(|stage| {
                    let Some(name) = stage.path.get_ident() else {
                        return Err(stage.error("a stage is `name = weight`"));
                    };
                    let name = LitStr::new(&name.to_string(), name.span());
                    if stages
                        .iter()
                        .any(|(other, _)| other.value() == name.value())
                    {
                        return Err(
                            stage.error(format!("stage `{}` is listed twice", name.value()))
                        );
                    }
                    stages.push((name, int::<u32>(&stage)?));
                    Ok(())
                })?;
                let total: u64 = stages
                    .iter()
                    .filter_map(|(_, w)| w.base10_parse::<u64>().ok())
                    .sum();
                if total == 0 {
                    return Err(meta.error("stages have no weight"));
                }
                set(meta, &mut self.stages, stages)
            }
            "schema" => {
                self.schema = true;
                Ok(())
            }
            "crate" => set(meta, &mut self.krate, meta.value()?.parse()?),
            other => Err(meta.error(format!(
                "unknown option `{other}`; expected one of {TYPE_OPTIONS}"
            ))),
        }
    }

    fn read_fields(&mut self, data: &Data) -> syn::Result<()> {
        let fields = match data {
            Data::Struct(s) => match &s.fields {
                Fields::Named(f) => f.named.iter().collect::<Vec<_>>(),
                Fields::Unnamed(f) => f.unnamed.iter().collect(),
                Fields::Unit => Vec::new(),
            },
            Data::Enum(e) => {
                for variant in &e.variants {
                    for field in variant.fields.iter() {
                        if let Some(attr) = job_attrs(&field.attrs).next() {
                            return Err(syn::Error::new(
                                attr.span(),
                                "`#[job(unique_key)]` and `#[job(group)]` are for the fields of a \
                                 struct, not of an enum's variant",
                            ));
                        }
                    }
                }
                Vec::new()
            }
            Data::Union(u) => {
                return Err(syn::Error::new(
                    u.union_token.span(),
                    "#[derive(Job)] is for structs and enums",
                ));
            }
        };
        for (index, field) in fields.into_iter().enumerate() {
            let member = match &field.ident {
                Some(ident) => Member::Named(ident.clone()),
                None => Member::Unnamed(index.into()),
            };
            for attr in job_attrs(&field.attrs) {
                attr.parse_nested_meta(|meta| {
                    let slot = if meta.path.is_ident("unique_key") {
                        &mut self.unique_key
                    } else if meta.path.is_ident("group") {
                        &mut self.group
                    } else {
                        return Err(
                            meta.error("unknown field option; expected `unique_key` or `group`")
                        );
                    };
                    set(&meta, slot, member.clone())
                })?;
            }
        }
        Ok(())
    }
}

fn job_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("job"))
}

fn set<T>(meta: &ParseNestedMeta<'_>, slot: &mut Option<T>, value: T) -> syn::Result<()> {
    if slot.is_some() {
        let name = meta
            .path
            .get_ident()
            .map(Ident::to_string)
            .unwrap_or_default();
        return Err(meta.error(format!("`{name}` is set twice")));
    }
    *slot = Some(value);
    Ok(())
}

fn int<T: std::str::FromStr>(meta: &ParseNestedMeta<'_>) -> syn::Result<LitInt>
where
    T::Err: std::fmt::Display,
{
    let lit: LitInt = meta.value()?.parse()?;
    lit.base10_parse::<T>()?;
    Ok(lit)
}

fn one_of(lit: &LitStr, choices: &[(&str, &str)], what: &str) -> syn::Result<Ident> {
    let value = lit.value();
    match choices.iter().find(|(written, _)| *written == value) {
        Some((_, variant)) => Ok(Ident::new(variant, Span::call_site())),
        None => {
            let names: Vec<String> = choices.iter().map(|(w, _)| format!("\"{w}\"")).collect();
            Err(syn::Error::new(
                lit.span(),
                format!(
                    "unknown {what} \"{value}\"; expected one of {}",
                    names.join(", ")
                ),
            ))
        }
    }
}
