//! `#[derive(Job)]` for the dcs job queue; use it through `dcs_queue::Job`.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{DeriveInput, parse_macro_input, parse_quote};

mod attrs;

use attrs::JobAttrs;

/// Implements `Job` for a payload type: its task name, its output and the defaults a job of
/// this kind starts with. The type must also implement `Serialize` and `Deserialize`.
///
/// ```ignore
/// use dcs_queue::Job;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Job)]
/// #[job(name = "process_book", priority = "high", retries = 5, timeout_secs = 600,
///       stages(text_extraction = 20, segmentation = 15), output = Summary)]
/// struct ProcessBook {
///     #[job(unique_key)]
///     book_id: String,
///     #[job(group)]
///     publisher_id: String,
/// }
/// ```
///
/// Options of the type (`#[job(...)]` on it), all but `name` optional:
///
/// | option | meaning |
/// |---|---|
/// | `name = "..."` | the task name (required: it is stored with every job, so it must not follow the type's name) |
/// | `output = Type` | what its handler returns, stored as the result (default `()`) |
/// | `priority = "high" \| "normal" \| "low"` | its priority |
/// | `retries = N` | retries after the first attempt |
/// | `timeout_secs = N`, `timeout_ms = N` | its timeout |
/// | `delay_secs = N`, `delay_ms = N` | run no earlier than this after enqueue |
/// | `cost = N` | what a start counts against the rate limits |
/// | `on_failure = "fail_parent" \| "ignore" \| "continue"` | what its failure does to its parent in a flow |
/// | `stages(name = weight, ...)` | its progress stages with their weights |
/// | `schema` | share the payload's JSON schema with operators (derive `schemars::JsonSchema` too; feature `schema`) |
/// | `crate = path` | where the queue's crate is (default `::dcs_queue`; `queue_core` inside the workspace) |
///
/// Options of a field: `#[job(unique_key)]` and `#[job(group)]` take the job's unique key
/// or group from a string field (or an `Option` of one). Every option can be overridden per
/// call with the setters of `NewJob`.
#[proc_macro_derive(Job, attributes(job))]
pub fn derive_job(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    let attrs = JobAttrs::read(input)?;
    let Some(name) = &attrs.name else {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[derive(Job)] needs `#[job(name = \"...\")]`: the task name is stored with every \
             job, so it is written out rather than taken from the type's name",
        ));
    };
    let krate: syn::Path = attrs.krate.clone().unwrap_or(parse_quote!(::dcs_queue));
    let private = quote!(#krate::__private);
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let output = attrs
        .output
        .as_ref()
        .map_or_else(|| quote!(()), |t| quote!(#t));

    let mut sets = Vec::new();
    if let Some(p) = &attrs.priority {
        sets.push(quote!(options.priority = ::core::option::Option::Some(#private::Priority::#p);));
    }
    if let Some(n) = &attrs.retries {
        sets.push(quote!(options.max_retries = ::core::option::Option::Some(#n);));
    }
    if let Some(ms) = &attrs.timeout_ms {
        sets.push(quote!(options.timeout = ::core::option::Option::Some(
            ::core::time::Duration::from_millis(#ms));));
    }
    if let Some(ms) = &attrs.delay_ms {
        sets.push(quote!(options.delay = ::core::option::Option::Some(
            ::core::time::Duration::from_millis(#ms));));
    }
    if let Some(n) = &attrs.cost {
        sets.push(quote!(options.cost = ::core::option::Option::Some(#n);));
    }
    if let Some(field) = &attrs.unique_key {
        sets.push(quote!(options.unique_key =
            #private::KeyField::key(&self.#field).map(::std::borrow::ToOwned::to_owned);));
    }
    if let Some(field) = &attrs.group {
        sets.push(quote!(options.group =
            #private::KeyField::key(&self.#field).map(::std::borrow::ToOwned::to_owned);));
    }
    let options = (!sets.is_empty()).then(|| {
        quote! {
            fn options(&self) -> #private::EnqueueOptions {
                let mut options = <#private::EnqueueOptions as ::core::default::Default>::default();
                #(#sets)*
                options
            }
        }
    });
    let stages = attrs.stages.as_ref().map(|stages| {
        let names = stages.iter().map(|(n, _)| n);
        let weights = stages.iter().map(|(_, w)| w);
        quote! {
            fn stages(&self) -> ::core::option::Option<#private::Stages> {
                // Names unique and weights positive: checked by the derive.
                #private::Stages::new([#((#names, #weights)),*]).ok()
            }
        }
    });
    let on_failure = attrs.on_failure.as_ref().map(|p| {
        quote! {
            fn on_failure() -> #private::ChildPolicy {
                #private::ChildPolicy::#p
            }
        }
    });
    let schema = attrs.schema.then(|| {
        quote! {
            fn schema() -> ::core::option::Option<#private::Value> {
                #private::schema_of::<Self>()
            }
        }
    });
    Ok(quote! {
        impl #impl_generics #krate::Job for #ident #ty_generics #where_clause {
            const NAME: &'static str = #name;
            type Output = #output;
            #options
            #stages
            #on_failure
            #schema
        }

        const _: () = {
            if #private::task_name_problem(#name).is_some() {
                ::core::panic!(
                    "#[job(name = ...)] is not a task name: it must not be empty or blank, and at most 200 bytes"
                );
            }
        };
    })
}
