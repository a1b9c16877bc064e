//! Exit codes, decided in one place for every peergrid binary: 0 when it
//! did its job, 2 when the user's input was wrong (a flag, a variable, a
//! file they named: fixing it helps, retrying does not), 1 for any other
//! failure (a server gone, a disk full, a panic).
//!
//! A binary states what counts as bad input in two ways, and
//! [`exit_code`] looks for either anywhere in an error's chain of causes:
//! it wraps what its configuration phase refused in [`BadInput`], and it
//! names the errors of its own crates that blame the input (an
//! agent-node's `AgentError::Config`, the CLI's `CoreError`). Printing
//! the error stays with the binary, which knows how it names itself.

use std::error::Error;
use std::process::ExitCode;

/// The exit code of a run the user's input made impossible.
pub const EXIT_BAD_INPUT: u8 = 2;

/// An error the user's input caused: the process exits 2. Its text is the
/// wrapped error's, unchanged.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BadInput(Box<dyn Error + Send + Sync + 'static>);

impl BadInput {
    /// Marks `error` (an error value or a message) as the input's fault.
    pub fn new(error: impl Into<Box<dyn Error + Send + Sync + 'static>>) -> BadInput {
        BadInput(error.into())
    }
}

/// The exit code of a binary's `result`: 0 for `Ok`; for an error, 2 when
/// it or any error it wraps (its `source()` chain, an `anyhow` context's
/// included) is a [`BadInput`] or an error `blames_input` accepts, else 1.
pub fn exit_code<T, E>(
    result: &Result<T, E>,
    blames_input: impl Fn(&(dyn Error + 'static)) -> bool,
) -> ExitCode
where
    E: AsRef<dyn Error + Send + Sync + 'static>,
{
    let Err(e) = result else { return ExitCode::SUCCESS };
    let mut cause: Option<&(dyn Error + 'static)> = Some(e.as_ref());
    while let Some(error) = cause {
        if error.is::<BadInput>() || blames_input(error) {
            return ExitCode::from(EXIT_BAD_INPUT);
        }
        cause = error.source();
    }
    ExitCode::FAILURE
}

/// For binaries whose only bad input is what they wrapped in [`BadInput`].
pub fn no_other_bad_input(_: &(dyn Error + 'static)) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another crate's error type, with one variant that blames the input.
    #[derive(Debug, thiserror::Error)]
    enum NodeError {
        #[error("invalid prosumers: must be at least 1")]
        Config,
        #[error("cannot reach the market")]
        Connect,
    }

    /// Errors that wrap another (as `#[source]` or `#[from]` do).
    #[derive(Debug, thiserror::Error)]
    #[error("starting the node")]
    struct Starting(#[source] NodeError);

    #[derive(Debug, thiserror::Error)]
    #[error("running")]
    struct Running(#[source] BadInput);

    fn code<E: AsRef<dyn Error + Send + Sync + 'static>>(result: Result<(), E>) -> ExitCode {
        exit_code(&result, |e| matches!(e.downcast_ref(), Some(NodeError::Config)))
    }

    type Boxed = Box<dyn Error + Send + Sync + 'static>;

    #[test]
    fn success_bad_input_and_failure_get_0_2_and_1() {
        assert_eq!(code::<Boxed>(Ok(())), ExitCode::SUCCESS);
        assert_eq!(code::<Boxed>(Err(NodeError::Config.into())), ExitCode::from(2));
        assert_eq!(code::<Boxed>(Err(NodeError::Connect.into())), ExitCode::from(1));
        // Anything a binary marked, whatever it wraps.
        let marked: Boxed = BadInput::new(NodeError::Connect).into();
        assert_eq!(code(Err(marked)), ExitCode::from(2));
        let message: Boxed = BadInput::new("--listen: not an address").into();
        assert_eq!(message.to_string(), "--listen: not an address", "the text is unchanged");
        assert_eq!(code(Err(message)), ExitCode::from(2));
        // Not every binary has bad input of its own.
        let config: Boxed = NodeError::Config.into();
        assert_eq!(exit_code(&Err::<(), _>(config), no_other_bad_input), ExitCode::FAILURE);
    }

    #[test]
    fn the_whole_chain_of_causes_is_asked() {
        assert_eq!(code::<Boxed>(Err(Starting(NodeError::Config).into())), ExitCode::from(2));
        assert_eq!(code::<Boxed>(Err(Starting(NodeError::Connect).into())), ExitCode::from(1));
        let marked: Boxed = Running(BadInput::new(Starting(NodeError::Connect))).into();
        assert_eq!(code(Err(marked)), ExitCode::from(2), "a marked cause counts");
        // What binaries hold: `anyhow` errors, with context around them.
        let config = anyhow::Error::new(Starting(NodeError::Config)).context("agent-node");
        assert_eq!(code(Err(config)), ExitCode::from(2));
        let marked = anyhow::Error::new(BadInput::new("bad flag")).context("market-node");
        assert_eq!(code(Err(marked)), ExitCode::from(2));
        let failed = anyhow::anyhow!("the learner thread panicked").context("trainer");
        assert_eq!(code(Err(failed)), ExitCode::from(1));
    }
}
