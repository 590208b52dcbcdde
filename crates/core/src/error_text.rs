//! An error as one line with its whole cause chain, for logs and error payloads (HTTP clients'
//! own texts often say only "error sending request"; the cause says why).

/// `error` followed by each of its sources: `outer: inner: innermost`.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_is_joined_outermost_first() {
        let error = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(with_causes(&error), "outer: disk on fire");
    }
}
