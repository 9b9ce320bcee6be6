//! Names each request by what it does, for the request log and the metrics: the kind of
//! operation and its root field (`mutation.registerPatient`). The client's own
//! `operationName` is free text and is never used as a label; only field names the
//! schema defines are, so the set of labels is bounded by the schema.

use std::sync::{Arc, OnceLock};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection,
};
use async_graphql::registry::{MetaType, Registry};
use async_graphql::{ServerResult, Variables};

/// Filled in once the document is parsed; a request whose document does not parse
/// keeps [`Operation::UNPARSED`].
#[derive(Debug, Default, Clone)]
pub struct Operation {
    /// The `operationName` the client asked to run (picks one of several operations).
    pub requested: Option<String>,
    label: Arc<OnceLock<String>>,
}

impl Operation {
    pub const UNPARSED: &'static str = "unparsed";

    pub fn new(requested: Option<String>) -> Self {
        Self {
            requested,
            label: Arc::default(),
        }
    }

    pub fn label(&self) -> &str {
        self.label.get().map_or(Self::UNPARSED, String::as_str)
    }
}

pub struct OperationLabel;

impl ExtensionFactory for OperationLabel {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Label)
    }
}

struct Label;

#[async_trait::async_trait]
impl Extension for Label {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Some(operation) = ctx.data_opt::<Operation>() {
            let label = label(
                &document,
                operation.requested.as_deref(),
                &ctx.schema_env.registry,
            );
            // Set once per request; a second parse (none happens) would keep the first.
            let _ = operation.label.set(label);
        }
        Ok(document)
    }
}

/// `kind.field` for one root field the schema defines; `kind.multiple` for several;
/// `kind.unknown` when the requested operation or its fields are not the schema's.
fn label(document: &ExecutableDocument, requested: Option<&str>, registry: &Registry) -> String {
    let operation = match (&document.operations, requested) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        // A single named operation is kept in the map too; it runs without a name.
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    };
    let Some(operation) = operation else {
        return "unknown".to_owned();
    };
    let (kind, root) = match operation.node.ty {
        OperationType::Query => ("query", registry.query_type.as_str()),
        OperationType::Mutation => ("mutation", registry.mutation_type.as_deref().unwrap_or("")),
        OperationType::Subscription => return "subscription.unknown".to_owned(),
    };
    let defined = |name: &str| match registry.types.get(root) {
        Some(MetaType::Object { fields, .. }) => fields.contains_key(name),
        _ => false,
    };
    let mut fields: Vec<&str> = operation
        .node
        .selection_set
        .node
        .items
        .iter()
        .filter_map(|item| match &item.node {
            Selection::Field(field) => Some(field.node.name.node.as_str()),
            _ => None,
        })
        .map(|name| match name {
            "__schema" | "__type" | "__typename" => "introspection",
            name if defined(name) => name,
            _ => "unknown",
        })
        .collect();
    fields.sort_unstable();
    fields.dedup();
    match fields.as_slice() {
        [one] => format!("{kind}.{one}"),
        [] => format!("{kind}.unknown"),
        _ => format!("{kind}.multiple"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn label_of(query: &str, requested: Option<&str>) -> String {
        let schema = super::super::build_schema(None, false);
        let operation = Operation::new(requested.map(str::to_owned));
        let mut request = async_graphql::Request::new(query).data(operation.clone());
        if let Some(name) = requested {
            request = request.operation_name(name);
        }
        // Each document fails validation (nothing resolves without a state); the label
        // is set once it parses.
        let _ = schema.execute(request).await;
        operation.label().to_owned()
    }

    #[tokio::test]
    async fn labels_name_only_what_the_schema_defines() {
        assert_eq!(label_of("{ me { zz } }", None).await, "query.me");
        assert_eq!(
            label_of("mutation M { a: login(input: {}) { token } }", None).await,
            "mutation.login"
        );
        assert_eq!(
            label_of("{ me { zz } a: me { zz } }", None).await,
            "query.me"
        );
        assert_eq!(
            label_of("{ me { zz } hospital { zz } }", None).await,
            "query.multiple"
        );
        assert_eq!(label_of("{ ZmFrZQ }", None).await, "query.unknown");
        assert_eq!(
            label_of("{ __schema { types { name } } }", None).await,
            "query.introspection"
        );
        let two = "query A { me { zz } } mutation B { login(input: {}) { token } }";
        assert_eq!(label_of(two, Some("B")).await, "mutation.login");
        assert_eq!(label_of(two, Some("C")).await, "unknown");
        assert_eq!(label_of(two, None).await, "unknown");
        assert_eq!(label_of("{ me { ", None).await, Operation::UNPARSED);
    }
}
