//! Parsed documents, reused by their text.
//!
//! Clients send the same few documents over and over with other variables, and parsing
//! one is the largest single cost of the GraphQL layer on a small mutation (callgrind,
//! `registerPatient`: the parser took 8 % of the server's instructions, about as much as
//! authenticating the caller). A parse depends only on the text (and the schema's fixed
//! recursion limit), so a document that parsed is kept and cloned for the next request
//! with the same text. Whether it is valid, allowed and within the limits is still
//! decided for every request, after this step.
//!
//! Bounded: documents up to [`MAX_TEXT`] bytes, at most [`MAX_DOCUMENTS`] of them; when
//! full, the cache starts over (a client sending ever new documents only loses the
//! reuse). A document that does not parse is not kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};

/// The longest document text kept.
pub const MAX_TEXT: usize = 8 * 1024;
/// Documents kept at most.
pub const MAX_DOCUMENTS: usize = 256;

type Documents = Arc<Mutex<HashMap<String, Arc<ExecutableDocument>>>>;

#[derive(Default)]
pub struct ParsedDocuments {
    documents: Documents,
}

impl ExtensionFactory for ParsedDocuments {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Reuse(self.documents.clone()))
    }
}

struct Reuse(Documents);

impl Reuse {
    fn documents(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ExecutableDocument>>> {
        // Whole values are inserted and the map cleared: a poisoned map is consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Extension for Reuse {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let kept = self.documents().get(query).cloned();
        if let Some(document) = kept {
            return Ok((*document).clone());
        }
        let document = next.run(ctx, query, variables).await?;
        if query.len() <= MAX_TEXT {
            let mut documents = self.documents();
            if documents.len() >= MAX_DOCUMENTS {
                documents.clear();
            }
            documents.insert(query.to_owned(), Arc::new(document.clone()));
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    struct Query;

    #[Object]
    impl Query {
        async fn echo(&self, text: String) -> String {
            text
        }
    }

    fn schema(documents: &Documents) -> Schema<Query, EmptyMutation, EmptySubscription> {
        Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(ParsedDocuments {
                documents: documents.clone(),
            })
            .finish()
    }

    #[tokio::test]
    async fn a_kept_document_runs_with_each_requests_own_variables() {
        let documents = Documents::default();
        let schema = schema(&documents);
        let query = "query($t: String!) { echo(text: $t) }";
        for text in ["first", "second"] {
            let request = async_graphql::Request::new(query)
                .variables(Variables::from_json(serde_json::json!({ "t": text })));
            let response = schema.execute(request).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            assert_eq!(
                response.data.into_json().expect("json"),
                serde_json::json!({ "echo": text })
            );
        }
        assert_eq!(documents.lock().expect("lock").len(), 1);
    }

    #[tokio::test]
    async fn what_does_not_parse_is_not_kept_and_the_cache_is_bounded() {
        let documents = Documents::default();
        let schema = schema(&documents);
        for _ in 0..2 {
            let response = schema.execute("{ echo(text: ").await;
            assert!(!response.errors.is_empty());
        }
        assert!(documents.lock().expect("lock").is_empty());
        for i in 0..MAX_DOCUMENTS + 10 {
            let response = schema
                .execute(format!("{{ echo(text: \"{i}\") }}").as_str())
                .await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
        }
        assert!(documents.lock().expect("lock").len() <= MAX_DOCUMENTS);
        // A document longer than MAX_TEXT is served but not kept.
        let long = format!("{{ echo(text: \"{}\") }}", "x".repeat(MAX_TEXT));
        documents.lock().expect("lock").clear();
        let response = schema.execute(long.as_str()).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert!(documents.lock().expect("lock").is_empty());
    }
}
